# Named hard cases for Tests/IntegrationTests/HardCaseReferenceTests.swift,
# each fitted at the true optimum (lme4's deviance function minimised by
# bobyqa with rhoend 1e-12 from several starts, restarted until it stops
# improving; GLMMs also glmer with tolPwrss 1e-13 and glmmTMB, compared on
# lme4's deviance function; the lowest objective wins and `source` says which).
# Run from the repository root:
#   Rscript Tests/Fixtures/tools/hard-cases.R
# Writes Tests/Fixtures/reference/<case>/sites/<site>.csv (one file per site,
# with a `site` column), pooled.csv, and reference.json. R fits the pooled
# rows read back from what was written. Needs lme4, glmmTMB, mlmRev, nlme,
# minqa, jsonlite.
#
# Cases:
#  scotssec            mlmRev::ScotsSec, site = secondary school (`second`),
#                      attain ~ verbal + sex + social + (1 | site), REML and ML
#                      (fits "reml", "ml"); and lme4's fit of (1 | primary) on the
#                      pooled rows (fit "primary_reml": 148 primary schools,
#                      whose codes recur across secondary schools; fedmix must
#                      refuse it as crossing sites).
#  oxboys              nlme::Oxboys, site = Subject, log(height) ~ age + (age | site), REML and ML.
#  grouseticks         lme4::grouseticks, site = LOCATION, YEAR numeric (95-97),
#                      HEIGHT uncentred: TICKS ~ YEAR + HEIGHT + (1 | site), Poisson,
#                      Laplace ("laplace"); and lme4's documented model with numeric
#                      YEAR, TICKS ~ YEAR + cHEIGHT + (1 | site) + (1 | site:BROOD)
#                      + (1 | site:INDEX) ("nested_laplace": intercept 46.6, SE 16).
#  sleepstudy-weighted lme4::sleepstudy, site = Subject, w = 1 + (Days mod 3)/2,
#                      Reaction ~ Days + (Days | site) with weights w, REML and ML.
#  one-site            40 simulated rows at one site: y ~ x + (1 | site);
#                      lme4 refuses (its message is recorded).
suppressMessages({
  library(lme4); library(glmmTMB); library(mlmRev); library(nlme); library(jsonlite); library(minqa)
})
root <- "Tests/Fixtures/reference"
quiet <- function(e) suppressWarnings(suppressMessages(e))

# Hessian of a deviance function by central differences (lme4's deriv12) at
# steps 1e-3 and 2e-3, extrapolated (4 H(h) - H(2h)) / 3 (smaller steps meet
# the PIRLS noise of the deviance function).
hessian_fd <- function(f, p) {
  H1 <- lme4:::deriv12(f, p, delta = 1e-3)$Hessian
  H2 <- lme4:::deriv12(f, p, delta = 2e-3)$Hessian
  (4 * H1 - H2) / 3
}

polish <- function(f, start, lower, rhobeg = 0.02, maxfun = 50000) {
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

write_case <- function(name, d) {
  dir <- file.path(root, name, "sites")
  unlink(dir, recursive = TRUE)
  dir.create(dir, recursive = TRUE, showWarnings = FALSE)
  for (s in unique(d$site)) write.csv(d[d$site == s, ], file.path(dir, paste0(s, ".csv")), row.names = FALSE)
  write.csv(d, file.path(root, name, "pooled.csv"), row.names = FALSE)
  read.csv(file.path(root, name, "pooled.csv"), colClasses = c(site = "character"))
}

vc_rows <- function(m) {
  vc <- as.data.frame(VarCorr(m))
  lapply(seq_len(nrow(vc)), function(k) list(grp = vc$grp[k], var1 = if (is.na(vc$var1[k])) NULL else vc$var1[k],
                                             var2 = if (is.na(vc$var2[k])) NULL else vc$var2[k],
                                             vcov = vc$vcov[k], sdcor = vc$sdcor[k]))
}
fe_rows <- function(est, se) lapply(seq_along(est), function(k) list(name = names(est)[k], estimate = unname(est[k]), std_error = unname(se[k])))

# An LMM at its optimum: bobyqa from lme4's fit and from `starts`, then lmer at the best θ.
lmm_ref <- function(formula, d, reml, starts, weights = NULL, fedmix_formula = formula) {
  form <- as.formula(formula)
  d$.w <- if (is.null(weights)) 1 else d[[weights]]
  m_def <- quiet(lmer(form, d, REML = reml, weights = .w))
  dd <- lmer(form, d, REML = reml, weights = .w, devFunOnly = TRUE)
  lower <- getME(m_def, "lower")
  cands <- list(list(name = "lme4-default", par = getME(m_def, "theta"), value = dd(getME(m_def, "theta"))))
  for (st in c(list(getME(m_def, "theta")), starts)) {
    p <- polish(dd, st, lower)
    cands[[length(cands) + 1]] <- list(name = sprintf("bobyqa from (%s)", paste(signif(st, 3), collapse = ", ")), par = p$par, value = p$value)
  }
  vals <- sapply(cands, `[[`, "value")
  best <- cands[[which.min(vals)]]
  m <- quiet(lmer(form, d, REML = reml, weights = .w, start = list(theta = best$par),
                  control = lmerControl(optimizer = "bobyqa", calc.derivs = FALSE,
                                        optCtrl = list(rhobeg = max(1e-10, 1e-9 * max(abs(best$par))), rhoend = 1e-12, maxfun = 60))))
  s <- summary(m)$coefficients
  obj <- if (reml) REMLcrit(m) else deviance(m)
  diag_idx <- which(lower == 0)
  list(formula = fedmix_formula, lme4_formula = formula, method = if (reml) "REML" else "ML", family = "gaussian",
       weights = weights, n_obs = nobs(m), n_groups = as.list(ngrps(m)),
       objective = obj, theta = unname(getME(m, "theta")), boundary = any(getME(m, "theta")[diag_idx] < 1e-7),
       singular = isSingular(m), fixed_effects = fe_rows(s[, 1], s[, 2]), sigma = sigma(m),
       variance_components = vc_rows(m), loglik = as.numeric(logLik(m)),
       source = best$name, lme4_default_objective = if (reml) REMLcrit(m_def) else deviance(m_def),
       lme4_default_fixed_effects = fe_rows(fixef(m_def), sqrt(diag(as.matrix(vcov(m_def))))))
}

cases <- list()

# ---------------------------------------------------------------- ScotsSec --
data(ScotsSec)
s <- data.frame(attain = ScotsSec$attain, verbal = ScotsSec$verbal, sex = as.character(ScotsSec$sex),
                social = ScotsSec$social, primary = as.integer(as.character(ScotsSec$primary)),
                site = as.character(ScotsSec$second))
d <- write_case("scotssec", s)
f <- "attain ~ verbal + sex + social + (1 | site)"
fits <- list(reml = lmm_ref(f, d, TRUE, list(0, 0.05, 0.5, 1)), ml = lmm_ref(f, d, FALSE, list(0, 0.05, 0.5, 1)))
p <- lmm_ref("attain ~ verbal + sex + social + (1 | primary)", d, TRUE, list(0.1, 0.5, 1),
             fedmix_formula = "attain ~ verbal + sex + social + (1 | primary)")
p$expected <- "fedmix refuses: the codes of primary recur at several sites (crossing sites)"
p$sites_per_primary <- as.list(table(tapply(d$site, d$primary, function(x) length(unique(x)))))
fits$primary_reml <- p
cases$scotssec <- list(case = "scotssec", site_column = "second", source = "mlmRev::ScotsSec", fits = fits)

# ------------------------------------------------------------------ Oxboys --
data(Oxboys, package = "nlme")
o <- data.frame(height = Oxboys$height, age = Oxboys$age, site = as.character(Oxboys$Subject))
d <- write_case("oxboys", o)
f <- "log(height) ~ age + (age | site)"
st <- list(c(1, 0, 1), c(0.5, 0.1, 0.2), c(5, 0, 1))
cases$oxboys <- list(case = "oxboys", site_column = "Subject", source = "nlme::Oxboys",
                     fits = list(reml = lmm_ref(f, d, TRUE, st), ml = lmm_ref(f, d, FALSE, st)))

# ------------------------------------------------------- sleepstudy weighted --
data(sleepstudy)
w <- data.frame(Reaction = sleepstudy$Reaction, Days = sleepstudy$Days, w = 1 + (sleepstudy$Days %% 3) / 2,
                site = as.character(sleepstudy$Subject))
d <- write_case("sleepstudy-weighted", w)
f <- "Reaction ~ Days + (Days | site)"
st <- list(c(1, 0, 1), c(0.5, 0, 0.2))
cases[["sleepstudy-weighted"]] <- list(case = "sleepstudy-weighted", site_column = "Subject", source = "lme4::sleepstudy",
  fits = list(reml = lmm_ref(f, d, TRUE, st, weights = "w"), ml = lmm_ref(f, d, FALSE, st, weights = "w")))

# ------------------------------------------------------------- grouseticks --
# A Poisson GLMM at its optimum. `cov`: the two covariates, standardised for
# a well-conditioned copy of the problem (beta_raw = J beta_std; θ unchanged).
glmm_ref <- function(f, d, cov) {
  form <- as.formula(f)
  tight <- glmerControl(optimizer = "bobyqa", tolPwrss = 1e-13, optCtrl = list(rhoend = 1e-12, maxfun = 1e6))
  m_def <- quiet(glmer(form, d, family = poisson))
  m_tight <- quiet(glmer(form, d, family = poisson, control = tight))
  ms <- c(mean(d[[cov[1]]]), mean(d[[cov[2]]])); ss <- c(sd(d[[cov[1]]]), sd(d[[cov[2]]]))
  ds <- d; ds[[cov[1]]] <- (d[[cov[1]]] - ms[1]) / ss[1]; ds[[cov[2]]] <- (d[[cov[2]]] - ms[2]) / ss[2]
  J <- diag(3); J[1, 2] <- -ms[1] / ss[1]; J[1, 3] <- -ms[2] / ss[2]; J[2, 2] <- 1 / ss[1]; J[3, 3] <- 1 / ss[2]
  m_std <- quiet(glmer(form, ds, family = poisson, control = tight))
  dd <- quiet(update(m_std, data = d, devFunOnly = TRUE))
  dds <- quiet(update(m_std, devFunOnly = TRUE))
  nt <- length(getME(m_std, "theta")); it <- seq_len(nt)
  lower <- c(rep(0, nt), rep(-Inf, 3))
  tomap <- function(p) c(p[it], J %*% p[-it]); fromraw <- function(p) c(p[it], solve(J, p[-it]))
  cands <- list()
  add <- function(name, par) cands[[length(cands) + 1]] <<- list(name = name, par = unname(par), value = dd(par))
  add("lme4-default", c(getME(m_def, "theta"), fixef(m_def)))
  add("lme4-tight", c(getME(m_tight, "theta"), fixef(m_tight)))
  pp <- polish(dds, c(getME(m_std, "theta"), fixef(m_std)), lower, rhobeg = 1e-3)
  add("lme4-tight standardised, mapped", tomap(pp$par))
  tmbs <- list()
  for (which in c("raw", "std")) {
    t <- quiet(tryCatch(glmmTMB(form, if (which == "raw") d else ds, family = poisson), error = function(e) NULL))
    if (is.null(t)) next
    tmbs[[which]] <- t
    b <- fixef(t)$cond
    if (which == "std") b <- J %*% b
    # θ in lme4's order (the terms sorted as lme4 sorts them)
    th <- sapply(names(getME(m_std, "theta")), function(n) sqrt(as.numeric(VarCorr(t)$cond[[sub("\\.\\(Intercept\\)$", "", n)]])))
    add(paste("glmmTMB", which), c(th, b))
  }
  vals <- sapply(cands, `[[`, "value")
  best <- cands[[which.min(vals)]]
  graw <- function(phi) dd(tomap(phi))
  pr <- polish(graw, fromraw(best$par), lower, rhobeg = 1e-4)
  if (pr$value < best$value - 1e-12) best <- list(name = paste(best$name, "+ raw bobyqa"), par = tomap(pr$par), value = pr$value)
  par <- best$par
  # SEs: glmmTMB (exact derivatives) on the standardised covariates, mapped
  # back; central differences of lme4's deviance function (β block where a
  # θ is 0) recorded as a check.
  H <- hessian_fd(dds, fromraw(par))
  keep <- c(which(par[it] > 1e-4), nt + 1:3)
  V <- 2 * solve(H[keep, keep])
  fd_se <- sqrt(diag(J %*% V[length(keep) - 2:0, length(keep) - 2:0] %*% t(J)))
  tmb <- tmbs[["std"]]
  se <- sqrt(diag(J %*% vcov(tmb)$cond %*% t(J)))
  est <- setNames(par[-it], names(fixef(m_std)))
  vcs <- lapply(it, function(k) list(grp = sub("\\.\\(Intercept\\)$", "", names(getME(m_std, "theta"))[k]), var1 = "(Intercept)",
                                     vcov = par[k]^2, sdcor = par[k]))
  list(formula = f, family = "poisson", n_obs = nrow(d), n_groups = as.list(ngrps(m_std)),
       objective = best$value, theta = par[it], theta_names = names(getME(m_std, "theta")),
       boundary = any(par[it] < 1e-7), singular = any(par[it] < 1e-4),
       fixed_effects = fe_rows(est, se), variance_components = vcs,
       source = best$name, candidates = lapply(cands, function(c) list(name = c$name, objective = c$value, par = c$par)),
       lme4_default_objective = dd(c(getME(m_def, "theta"), fixef(m_def))),
       lme4_default_fixed_effects = fe_rows(fixef(m_def), sqrt(diag(as.matrix(vcov(m_def))))),
       se_method = "glmmTMB on standardised covariates, mapped back", fd_std_errors = unname(fd_se),
       glmmTMB_theta = unname(cands[[which(sapply(cands, `[[`, "name") == "glmmTMB std")]]$par[it]))
}
data(grouseticks)
g <- data.frame(TICKS = grouseticks$TICKS, YEAR = as.numeric(as.character(grouseticks$YEAR)),
                HEIGHT = grouseticks$HEIGHT, cHEIGHT = grouseticks$cHEIGHT,
                BROOD = as.character(grouseticks$BROOD), INDEX = as.character(grouseticks$INDEX),
                site = as.character(grouseticks$LOCATION))
d <- write_case("grouseticks", g)
cases$grouseticks <- list(case = "grouseticks", site_column = "LOCATION", source = "lme4::grouseticks",
  note = paste("laplace: the brief's model. nested_laplace: lme4's documented grouseticks model with YEAR numeric",
               "(TICKS ~ YEAR + cHEIGHT + (1|LOCATION) + (1|BROOD) + (1|INDEX); broods and rows nested in locations),",
               "whose intercept 46.6 (SE 16) is the '46.6 (SE 15)' fit; its LOCATION variance is on the bound."),
  fits = list(laplace = glmm_ref("TICKS ~ YEAR + HEIGHT + (1 | site)", d, c("YEAR", "HEIGHT")),
              nested_laplace = glmm_ref("TICKS ~ YEAR + cHEIGHT + (1 | site) + (1 | site:BROOD) + (1 | site:INDEX)", d, c("YEAR", "cHEIGHT"))))

# ---------------------------------------------------------------- one site --
set.seed(7)
x <- round(rnorm(40), 4)
one <- data.frame(y = round(1 + 0.5 * x + rnorm(40), 4), x = x, site = "only")
d <- write_case("one-site", one)
msg <- tryCatch({ lmer(y ~ x + (1 | site), d); "no error" }, error = function(e) conditionMessage(e))
cases[["one-site"]] <- list(case = "one-site", site_column = "site", source = "simulated (set.seed(7))",
  fits = list(reml = list(formula = "y ~ x + (1 | site)", lme4_refuses = TRUE, lme4_error = msg,
                          expected = "fedmix refuses: one level of the grouping factor (one site)")))

for (n in names(cases)) {
  cases[[n]]$lme4_version <- as.character(packageVersion("lme4"))
  cases[[n]]$generator <- "Tests/Fixtures/tools/hard-cases.R"
  writeLines(toJSON(cases[[n]], auto_unbox = TRUE, digits = I(17), null = "null", pretty = TRUE),
             file.path(root, n, "reference.json"))
  for (k in names(cases[[n]]$fits)) {
    fk <- cases[[n]]$fits[[k]]
    cat(sprintf("%s/%s: objective %s (%s), lme4 default %s, theta %s\n", n, k,
                format(fk$objective, digits = 15), fk$source, format(fk$lme4_default_objective, digits = 15),
                paste(signif(as.numeric(unlist(fk$theta)), 6), collapse = " ")))
  }
}
