# Simulated datasets and their true optima for the randomized agreement suite
# (Tests/IntegrationTests/RandomizedAgreementTests.swift). Run from the
# repository root:
#   Rscript Tests/Fixtures/tools/randomized-agreement.R
# Writes Tests/Fixtures/randomized/data/<id>.csv (one CSV per dataset, a `site`
# column; values rounded to 6 significant digits and read back before fitting)
# and Tests/Fixtures/randomized/references.json. Needs R with lme4, glmmTMB,
# minqa and jsonlite (the Swift tests do not need R).
#
# Kinds: random-intercept LMM y ~ x + z + (1 | site) and random-slope LMM
# y ~ x + z + (1 + x | site), each fitted by REML and ML; binomial GLMM
# yb ~ x + z + (1 | site) and Poisson GLMM count ~ x + z [+ offset(log(expo))]
# + (1 | site), Laplace. ICC 0 (true variance 0) to 0.5, many in 0.001-0.08;
# 5-100 sites; balanced, unbalanced and one-huge-site layouts; x standard,
# in thousands, or uncentred around 1000; z binary, normal or constant within
# each site.
#
# The reference is the lowest objective found by any of:
#  - lme4's deviance function minimised by bobyqa (rhoend 1e-12, maxfun 1e6)
#    from several starts (lme4's default start, small and large θ, a grid over
#    θ for random intercepts), restarted from the best point until it no
#    longer improves;
#  - the same on the model with x standardised (a well-conditioned problem
#    with the same optimum: θ of an intercept is unchanged, the random slope's
#    covariance and β are mapped back exactly), used as a start on the raw data;
#  - GLMMs: glmer with tolPwrss 1e-13 and bobyqa (rhoend 1e-12), and glmmTMB on
#    the raw and the standardised data (its optimum evaluated with lme4's
#    deviance function, so all candidates are compared on one objective).
# `source` records which candidate won. Objectives: LMM REML criterion
# (REMLcrit) or ML deviance; GLMM the Laplace objective = lme4's deviance
# function at (θ, β) = −2 logLik of the Laplace fit, with all constants (the
# convention of reference-tight-glmm.json and fedmix's `objective`).
# SEs: LMM from lmer at the optimum (σ² A⁻¹, exact); GLMM from glmmTMB
# (exact derivatives) on the standardised problem, mapped back, or where θ is
# at 0 from central differences of lme4's deviance function in β (a GLM
# there: reproduces glm's SEs to 1e-8). lme4's deviance function is too noisy
# for second differences where the intercept is poorly determined;
# lme4's own SEs (finite differences, vcov()) are recorded too.
suppressMessages({
  library(lme4); library(glmmTMB); library(jsonlite); library(minqa)
})
set.seed(20261129)
out <- "Tests/Fixtures/randomized"
dir.create(file.path(out, "data"), recursive = TRUE, showWarnings = FALSE)
args <- commandArgs(trailingOnly = TRUE)
only <- if (length(args)) args else NULL   # optional dataset ids to refit (debugging)

# ---------------------------------------------------------------- design ----
kinds <- c(rep("ri", 75), rep("rs", 55), rep("binomial", 42), rep("poisson", 42))
site_counts <- c(5, 6, 8, 10, 12, 15, 20, 25, 30, 40, 50, 75, 100)
draw_icc <- function(j) {
  r <- j %% 20
  if (r %in% c(0, 7)) 0                                         # true variance 0
  else if (r %in% c(1, 2, 3, 5, 8, 9, 11, 13, 14, 16, 18)) exp(runif(1, log(0.001), log(0.08)))
  else runif(1, 0.08, 0.5)
}
sizes_for <- function(n_sites, layout, cap, huge_max) {
  if (layout == "balanced") {
    m <- sample(c(5, 8, 10, 15, 20, 30, 50, 100, 200, 500), 1)
    m <- max(5, min(m, floor(cap / n_sites)))
    rep(m, n_sites)
  } else if (layout == "unbalanced") {
    s <- round(exp(runif(n_sites, log(5), log(max(6, min(600, 4 * cap / n_sites))))))
    while (sum(s) > cap) s <- pmax(5, round(s * 0.8))
    s
  } else {                                                      # one huge site among tiny ones
    s <- sample(5:15, n_sites, replace = TRUE)
    s[sample.int(n_sites, 1)] <- sample(seq(min(500, huge_max), huge_max, by = 1), 1)
    s
  }
}
r6 <- function(x) signif(x, 6)

simulate <- function(i, kind, j) {
  n_sites <- site_counts[(j * 7) %% length(site_counts) + 1]
  layout <- c("balanced", "unbalanced", "huge")[(j %% 3) + 1]
  scaling <- c("standard", "standard", "thousands", "uncentred")[((j %/% 3) %% 4) + 1]
  zkind <- c("binary", "normal", "site")[((j %/% 2) %% 3) + 1]
  glmm <- kind %in% c("binomial", "poisson")
  sizes <- sizes_for(n_sites, layout, cap = if (glmm) 1500 else 4000, huge_max = if (glmm) 1000 else 2000)
  icc <- draw_icc(j)
  site <- rep(sprintf("s%03d", seq_len(n_sites)), sizes)
  n <- length(site); g <- match(site, unique(site))
  xs <- rnorm(n)
  x <- switch(scaling, standard = xs, thousands = 1000 * xs + 500, uncentred = 1000 + 5 * xs)
  z <- switch(zkind, binary = rbinom(n, 1, 0.4), normal = rnorm(n), site = rnorm(n_sites)[g])
  d <- data.frame(site = site)
  truth <- list(icc = icc, n_sites = n_sites, layout = layout, scaling = scaling, z = zkind)
  if (!glmm) {
    sigma <- sample(c(1, 15, 0.05), 1)
    b <- c(sample(c(0, 130, -3), 1), 0.5 * sigma, -0.3 * sigma)
    su <- sqrt(icc / (1 - icc)) * sigma
    u <- rnorm(n_sites) * su
    eta <- b[1] + b[2] * xs + b[3] * z + u[g]
    if (kind == "rs") {
      sv <- sample(c(0, 0.05, 0.2, 0.5), 1) * sigma * (if (icc == 0) 0 else 1)
      rho <- runif(1, -0.6, 0.6)
      v <- (rho * u / max(su, 1e-300) + sqrt(1 - rho^2) * rnorm(n_sites)) * sv
      eta <- eta + v[g] * xs
      truth$slope_sd <- sv; truth$rho <- rho
    }
    d$y <- r6(eta + rnorm(n) * sigma)
    truth$sigma <- sigma
  } else if (kind == "binomial") {
    su <- sqrt(icc / (1 - icc) * pi^2 / 3)
    u <- rnorm(n_sites) * su
    b0 <- runif(1, -2.5, 0.5)
    p <- plogis(b0 + 0.6 * xs - 0.4 * z + u[g])
    d$yb <- rbinom(n, 1, p)
    if (length(unique(d$yb)) < 2) d$yb[1] <- 1 - d$yb[1]
    truth$b0 <- b0
  } else {
    su <- sqrt(icc / (1 - icc))
    u <- rnorm(n_sites) * su
    offset <- j %% 2 == 0
    expo <- if (offset) r6(runif(n, 0.5, 5)) else rep(1, n)
    b0 <- runif(1, -1, 1.5)
    mu <- exp(b0 + 0.4 * xs - 0.3 * z + u[g]) * expo
    d$count <- rpois(n, mu)
    if (offset) d$expo <- expo
    truth$b0 <- b0; truth$offset <- offset
  }
  d$x <- r6(x); d$z <- r6(z)
  truth$site_sd <- su
  list(data = d, truth = truth)
}

formula_for <- function(kind, offset) switch(kind,
  ri = "y ~ x + z + (1 | site)",
  rs = "y ~ x + z + (1 + x | site)",
  binomial = "yb ~ x + z + (1 | site)",
  poisson = if (offset) "count ~ x + z + offset(log(expo)) + (1 | site)" else "count ~ x + z + (1 | site)")

# ------------------------------------------------------------- optimizer ----
# Hessian of a deviance function by central differences (lme4's deriv12) at
# steps 1e-3 and 2e-3, extrapolated (4 H(h) - H(2h)) / 3. Smaller steps meet
# the deviance function's own noise (PIRLS); on the standardised problem these
# steps reproduce glm's SEs to 1e-8 where θ = 0.
hessian_fd <- function(f, p) {
  H1 <- lme4:::deriv12(f, p, delta = 1e-3)$Hessian
  H2 <- lme4:::deriv12(f, p, delta = 2e-3)$Hessian
  (4 * H1 - H2) / 3
}

# bobyqa from `start`, restarted from the best point until it stops improving.
polish <- function(f, start, lower, rhobeg = 0.02, maxfun = 20000) {
  best <- list(par = start, value = f(start))
  for (k in 1:6) {
    gap <- (best$par - lower)[is.finite(lower) & best$par - lower > 0]
    rb <- max(1e-7, min(rhobeg, 0.45 * min(c(Inf, gap))))
    r <- tryCatch(minqa::bobyqa(best$par, f, lower = lower, control = list(rhobeg = rb, rhoend = 1e-12, maxfun = maxfun)),
                  error = function(e) NULL)
    if (is.null(r) || !(r$fval < best$value - 1e-12)) {
      if (!is.null(r) && r$fval < best$value) best <- list(par = r$par, value = r$fval)
      break
    }
    best <- list(par = r$par, value = r$fval)
    rhobeg <- rhobeg / 4
  }
  best
}

# Maps a random-slope factor (lme4's θ = (L11, L21, L22)) through b' = T b:
# the lower-triangular L' with L' L'ᵀ = T L Lᵀ Tᵀ (by QR, so singular L is fine).
map_theta <- function(theta, Tm) {
  L <- matrix(c(theta[1], theta[2], 0, theta[3]), 2)
  Lr <- t(qr.R(qr(t(Tm %*% L))))
  sgn <- ifelse(diag(Lr) < 0, -1, 1)
  Lr <- Lr %*% diag(sgn)
  c(Lr[1, 1], Lr[2, 1], Lr[2, 2])
}

num <- function(x) unname(as.numeric(x))
vc_rows <- function(m) {
  vc <- as.data.frame(VarCorr(m))
  lapply(seq_len(nrow(vc)), function(k) list(grp = vc$grp[k], var1 = if (is.na(vc$var1[k])) NULL else vc$var1[k],
                                             var2 = if (is.na(vc$var2[k])) NULL else vc$var2[k],
                                             vcov = vc$vcov[k], sdcor = vc$sdcor[k]))
}

fit_lmm <- function(d, kind, reml) {
  form <- as.formula(formula_for(kind, FALSE))
  m_def <- suppressWarnings(suppressMessages(lmer(form, d, REML = reml)))
  dd <- lmer(form, d, REML = reml, devFunOnly = TRUE)
  lower <- if (kind == "ri") 0 else c(0, -Inf, 0)
  mx <- mean(d$x); sx <- sd(d$x)
  ds <- d; ds$x <- (d$x - mx) / sx
  dds <- lmer(form, ds, REML = reml, devFunOnly = TRUE)
  cands <- list()
  add <- function(name, par) { cands[[length(cands) + 1]] <<- list(name = name, par = par, value = dd(par)) }
  add("lme4-default", getME(m_def, "theta"))
  if (kind == "ri") {
    grid <- c(0, exp(seq(log(1e-4), log(30), length.out = 120)))
    vals <- sapply(grid, dd)
    for (st in unique(c(grid[which.min(vals)], 1, 0.05, 0))) {
      p <- polish(dd, st, lower, rhobeg = max(0.02, st / 4)); add(sprintf("bobyqa from %g", st), p$par)
    }
    # the standardised problem has the same θ
    p <- polish(dds, grid[which.min(sapply(grid, dds))], lower); add("standardised", p$par)
  } else {
    # x standardised: b_raw = T b_std, T = [[1, -m/s], [0, 1/s]]. The raw
    # criterion is minimised in standardised coordinates (well scaled).
    Tm <- matrix(c(1, 0, -mx / sx, 1 / sx), 2)
    g <- function(phi) dd(map_theta(phi, Tm))
    starts <- list(c(1, 0, 1), c(0.1, 0, 0.1), c(0.3, 0, 0.01), c(0.05, 0, 0.3), c(0.1, -0.5, 0.01), c(0.1, 0.5, 0.01),
                   map_theta(getME(m_def, "theta"), solve(Tm)))
    best_std <- NULL
    for (st in starts) {
      ps <- polish(dds, st, lower)
      add("standardised, mapped", map_theta(ps$par, Tm))
      if (is.null(best_std) || ps$value < best_std$value) best_std <- ps
      p <- polish(g, st, lower); add(sprintf("raw in standardised coordinates from (%s)", paste(signif(st, 3), collapse = ", ")), map_theta(p$par, Tm))
    }
    p <- polish(g, best_std$par, lower, rhobeg = 1e-4); add("standardised optimum, polished on raw", map_theta(p$par, Tm))
  }
  vals <- sapply(cands, `[[`, "value")
  best <- cands[[which.min(vals)]]
  # lmer at the best θ (bobyqa from there, tiny steps: returns its best point)
  m <- suppressWarnings(suppressMessages(lmer(form, d, REML = reml, start = list(theta = best$par),
          control = lmerControl(optimizer = "bobyqa", calc.derivs = FALSE,
                                optCtrl = list(rhobeg = max(1e-10, 1e-9 * max(abs(best$par))), rhoend = 1e-12, maxfun = 60)))))
  obj <- if (reml) REMLcrit(m) else deviance(m)
  theta <- getME(m, "theta")
  if (obj > best$value + 1e-8) stop(sprintf("lmer refit above best candidate by %g", obj - best$value))
  s <- summary(m)$coefficients
  diag_idx <- if (kind == "ri") 1 else c(1, 3)
  list(objective = obj, theta = num(theta), lower = num(lower),
       boundary = any(theta[diag_idx] < 1e-7 * pmax(1, abs(theta[diag_idx]))) || any(theta[diag_idx] == 0),
       singular = isSingular(m, tol = 1e-4),
       fixed_effects = lapply(seq_len(nrow(s)), function(k) list(name = rownames(s)[k], estimate = s[k, 1], std_error = s[k, 2])),
       sigma = sigma(m), variance_components = vc_rows(m),
       source = best$name,
       lme4_default_objective = if (reml) REMLcrit(m_def) else deviance(m_def),
       candidate_spread = max(vals) - min(vals))
}

fit_glmm <- function(d, kind, offset) {
  fam <- if (kind == "binomial") binomial else poisson
  fstr <- formula_for(kind, offset); form <- as.formula(fstr)
  tight <- glmerControl(optimizer = "bobyqa", tolPwrss = 1e-13, optCtrl = list(rhoend = 1e-12, maxfun = 5e4),
                        calc.derivs = TRUE)
  mx <- mean(d$x); sx <- sd(d$x)
  ds <- d; ds$x <- (d$x - mx) / sx
  # beta_raw = J beta_std (intercept, x, z)
  J <- diag(3); J[1, 2] <- -mx / sx; J[2, 2] <- 1 / sx
  quiet <- function(e) suppressWarnings(suppressMessages(e))
  m_def <- quiet(tryCatch(glmer(form, d, family = fam), error = function(e) NULL))
  m_raw <- quiet(tryCatch(glmer(form, d, family = fam, control = tight), error = function(e) NULL))
  m_std <- quiet(glmer(form, ds, family = fam, control = tight))
  dd <- quiet(update(m_std, data = d, devFunOnly = TRUE))     # raw data, Laplace, par = c(θ, β)
  dds <- quiet(update(m_std, devFunOnly = TRUE))              # standardised data
  cands <- list()
  add <- function(name, par) {
    v <- tryCatch(dd(par), error = function(e) Inf)
    cands[[length(cands) + 1]] <<- list(name = name, par = par, value = v)
  }
  if (!is.null(m_def)) add("lme4-default", c(getME(m_def, "theta"), fixef(m_def)))
  if (!is.null(m_raw)) add("lme4-tight", c(getME(m_raw, "theta"), fixef(m_raw)))
  # θ = 0 is the GLM: a candidate of its own (a boundary optimum the
  # optimizers above can miss from their start at θ = 1)
  g0 <- quiet(tryCatch(glm(update(form, . ~ . - (1 | site)), data = d, family = fam), error = function(e) NULL))
  if (!is.null(g0) && all(is.finite(coef(g0)))) add("glm (θ = 0)", c(0, coef(g0)))
  ps <- c(getME(m_std, "theta"), fixef(m_std))
  # polish the standardised optimum (well conditioned) and map it back
  pp <- polish(dds, ps, c(0, -Inf, -Inf, -Inf), rhobeg = 1e-3)
  add("lme4-tight standardised, mapped", c(pp$par[1], J %*% pp$par[-1]))
  for (which in c("raw", "std")) {
    dat <- if (which == "raw") d else ds
    t <- quiet(tryCatch(glmmTMB(form, dat, family = fam), error = function(e) NULL))
    if (!is.null(t) && all(is.finite(fixef(t)$cond))) {
      th <- sqrt(as.numeric(VarCorr(t)$cond$site))
      b <- fixef(t)$cond
      if (which == "std") b <- J %*% b
      add(sprintf("glmmTMB %s", which), c(th, b))
    }
  }
  # polish every candidate on the raw objective as well
  vals <- sapply(cands, `[[`, "value")
  best <- cands[[which.min(vals)]]
  graw <- function(phi) dd(c(phi[1], J %*% phi[-1]))     # raw objective, standardised coordinates
  pr <- polish(graw, c(best$par[1], solve(J, best$par[-1])), c(0, -Inf, -Inf, -Inf), rhobeg = 1e-4)
  pr$par <- c(pr$par[1], J %*% pr$par[-1])
  if (pr$value < best$value - 1e-12) best <- list(name = paste(best$name, "+ raw bobyqa"), par = pr$par, value = pr$value)
  par <- best$par
  # SEs: on the standardised problem (well conditioned), mapped back. Interior
  # θ: glmmTMB's (exact derivatives; lme4's deviance function is too noisy
  # for second differences in a poorly determined intercept). θ = 0: the β
  # block of central differences (a GLM there; reproduces glm's SEs to 1e-8).
  pstd <- c(par[1], solve(J, par[-1]))
  H <- hessian_fd(dds, pstd)
  fd_se <- sqrt(diag(J %*% (2 * solve(H[-1, -1])) %*% t(J)))
  tmb <- quiet(tryCatch(glmmTMB(form, ds, family = fam), error = function(e) NULL))
  tmb_se <- if (is.null(tmb)) NULL else sqrt(diag(J %*% vcov(tmb)$cond %*% t(J)))
  se <- if (par[1] < 1e-4 || is.null(tmb_se) || any(!is.finite(tmb_se))) fd_se else tmb_se
  se_method <- if (identical(se, fd_se)) "central differences, beta block (theta at 0)" else "glmmTMB, standardised x, mapped back"
  names_b <- names(fixef(m_std))
  lme4_se <- if (!is.null(m_raw)) num(sqrt(diag(as.matrix(vcov(m_raw))))) else NULL
  list(objective = best$value, theta = num(par[1]), lower = 0,
       boundary = par[1] < 1e-7,
       singular = par[1] < 1e-4,
       fixed_effects = lapply(seq_along(names_b), function(k) list(name = names_b[k], estimate = par[k + 1], std_error = se[k])),
       sigma = 1,
       variance_components = list(list(grp = "site", var1 = "(Intercept)", vcov = par[1]^2, sdcor = par[1])),
       source = best$name,
       lme4_default_objective = if (!is.null(m_def)) dd(c(getME(m_def, "theta"), fixef(m_def))) else NULL,
       lme4_tight_objective = if (!is.null(m_raw)) dd(c(getME(m_raw, "theta"), fixef(m_raw))) else NULL,
       lme4_std_errors = lme4_se, se_method = se_method,
       glmmTMB_std_errors = if (is.null(tmb_se)) NULL else num(tmb_se),
       glmmTMB_theta = if (is.null(tmb)) NULL else sqrt(as.numeric(VarCorr(tmb)$cond$site)),
       candidate_spread = max(vals[is.finite(vals)]) - min(vals))
}

# ------------------------------------------------------------------ main ----
refs <- list()
counter <- table(kinds) * 0
ids <- character(0)
for (i in seq_along(kinds)) {
  kind <- kinds[i]
  counter[kind] <- counter[kind] + 1
  j <- as.integer(counter[kind])
  id <- sprintf("%s-%03d", kind, j)
  sim <- simulate(i, kind, j)                 # always simulate: keeps the random stream fixed
  if (!is.null(only) && !(id %in% only)) next
  path <- file.path(out, "data", paste0(id, ".csv"))
  write.csv(sim$data, path, row.names = FALSE)
  d <- read.csv(path, colClasses = c(site = "character"))    # fit exactly what was written
  offset <- isTRUE(sim$truth$offset)
  t0 <- Sys.time()
  fits <- if (kind %in% c("ri", "rs")) list(reml = fit_lmm(d, kind, TRUE), ml = fit_lmm(d, kind, FALSE))
          else list(laplace = fit_glmm(d, kind, offset))
  refs[[id]] <- list(id = id, kind = kind, family = switch(kind, binomial = "binomial", poisson = "poisson", "gaussian"),
                     formula = formula_for(kind, offset), n_obs = nrow(d), n_sites = length(unique(d$site)),
                     truth = sim$truth, fits = fits)
  cat(sprintf("%s n=%d sites=%d icc=%.4f %s %s: %s (%.1fs)\n", id, nrow(d), length(unique(d$site)), sim$truth$icc,
              sim$truth$layout, sim$truth$scaling,
              paste(sprintf("%s %.6f [%s, θ1 %.3g, default %+.2e]", names(fits), sapply(fits, `[[`, "objective"),
                            sapply(fits, `[[`, "source"), sapply(fits, function(f) f$theta[1]),
                            sapply(fits, function(f) (if (is.null(f$lme4_default_objective)) NA else f$lme4_default_objective) - f$objective)),
                    collapse = "; "),
              as.numeric(Sys.time() - t0, units = "secs")))
}
json_path <- file.path(out, if (is.null(only)) "references.json" else "references-partial.json")
writeLines(toJSON(list(generator = "Tests/Fixtures/tools/randomized-agreement.R", seed = 20261129,
                       lme4 = as.character(packageVersion("lme4")), glmmTMB = as.character(packageVersion("glmmTMB")),
                       datasets = unname(refs)),
                  auto_unbox = TRUE, digits = I(17), null = "null", pretty = FALSE), json_path)
cat("wrote", length(refs), "datasets to", json_path, "\n")
