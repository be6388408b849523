# R reference values for the inference features of issue 14 (flat models and
# cluster-robust SEs, anova() of nested models, profile confidence intervals,
# Satterthwaite / Kenward-Roger df, ICC and design effect), computed on the
# pooled rows of the reference cases.
#
# Run from the repository root:
#   Rscript Tests/Fixtures/tools/inference-references.R [FIXTURES_DIR] [OUT_JSON]
# FIXTURES_DIR defaults to "Tests/Fixtures" (data in FIXTURES_DIR/reference/<case>/, the
# repository's copies of the reference cases),
# OUT_JSON to Tests/Fixtures/inference/references.json.
# Needs R with lme4, lmerTest, pbkrtest, sandwich, jsonlite, minqa (not the tests).
# Deterministic: no random numbers, no timestamps; doubles are written with the
# shortest of %.15g/%.16g/%.17g that reads back to the same double.
suppressMessages({
  library(lme4)
  library(sandwich)
  library(jsonlite)
})
args <- commandArgs(trailingOnly = TRUE)
fixtures <- if (length(args) >= 1) args[1] else "Tests/Fixtures"
out_path <- if (length(args) >= 2) args[2] else "Tests/Fixtures/inference/references.json"
has_kr <- requireNamespace("pbkrtest", quietly = TRUE)

# ---------------------------------------------------------------- JSON writer
A <- function(x) structure(x, class = c("jarray", class(x)))  # force a JSON array
fmt_num <- function(v) {
  if (is.na(v)) return("null")
  if (!is.finite(v)) stop("non-finite number in output")
  for (d in 15:17) { s <- sprintf(paste0("%.", d, "g"), v); if (as.numeric(s) == v) return(s) }
  s
}
scalar_json <- function(v) {
  if (is.null(v)) return("null")
  if (is.logical(v)) return(if (is.na(v)) "null" else if (v) "true" else "false")
  if (is.numeric(v) && !is.integer(v)) return(fmt_num(v))
  if (is.integer(v)) return(if (is.na(v)) "null" else as.character(v))
  if (is.character(v) || is.factor(v)) return(if (is.na(v)) "null" else as.character(toJSON(as.character(v), auto_unbox = TRUE)))
  stop("unsupported type ", class(v))
}
to_json <- function(x, ind = "") {
  nxt <- paste0(ind, "  ")
  if (is.null(x)) return("null")
  if (is.list(x)) {
    if (length(x) == 0) return(if (is.null(names(x))) "[]" else "{}")
    if (!is.null(names(x))) {
      items <- vapply(seq_along(x), function(i) paste0(nxt, toJSON(names(x)[i], auto_unbox = TRUE), ": ", to_json(x[[i]], nxt)), "")
      return(paste0("{\n", paste(items, collapse = ",\n"), "\n", ind, "}"))
    }
    items <- vapply(x, function(e) paste0(nxt, to_json(e, nxt)), "")
    return(paste0("[\n", paste(items, collapse = ",\n"), "\n", ind, "]"))
  }
  if (is.matrix(x)) stop("convert matrices with mat()")
  arr <- inherits(x, "jarray") || length(x) != 1
  x <- unclass(x); attributes(x) <- NULL
  if (!arr) return(scalar_json(x))
  paste0("[", paste(vapply(seq_along(x), function(i) scalar_json(x[i]), ""), collapse = ", "), "]")
}
mat <- function(m) list(names = A(colnames(m)), row_major = lapply(seq_len(nrow(m)), function(i) A(unname(m[i, ]))))
with_warnings <- function(expr) {
  w <- character(0); msg <- character(0)
  val <- withCallingHandlers(expr, warning = function(cnd) { w <<- c(w, conditionMessage(cnd)); invokeRestart("muffleWarning") },
                             message = function(cnd) { msg <<- c(msg, trimws(conditionMessage(cnd))); invokeRestart("muffleMessage") })
  list(value = val, warnings = unique(w), messages = unique(msg))
}

# ---------------------------------------------------------------- data
read_case <- function(case) {
  dir <- file.path(fixtures, "reference", case)
  ref <- fromJSON(file.path(dir, "reference.json"), simplifyVector = FALSE)
  stopifnot(ref$site_column == "site")
  d <- read.csv(file.path(dir, "pooled.csv"), colClasses = c(site = "character"))
  list(case = case, data = d, ref = ref, md5 = unname(tools::md5sum(file.path(dir, "pooled.csv"))))
}
cases <- lapply(setNames(nm = c("sleepstudy", "exam", "contraception", "cbpp")), read_case)
ref_formula <- function(case, fit) cases[[case]]$ref$fits[[fit]]$formula
fixed_part <- function(f) paste(deparse(nobars(as.formula(f)), width.cutoff = 500L), collapse = "")

tight_lmer <- lmerControl(optimizer = "nloptwrap", optCtrl = list(xtol_abs = 1e-14, ftol_abs = 1e-15, ftol_rel = 1e-16, xtol_rel = 1e-14, maxeval = 100000))
tight_glmer <- glmerControl(tolPwrss = 1e-13, optimizer = "nloptwrap",
                            optCtrl = list(xtol_abs = 1e-12, ftol_abs = 1e-14, ftol_rel = 1e-15, xtol_rel = 1e-12, maxeval = 100000))
tight_desc <- list(lmer = "lmerControl(optimizer = 'nloptwrap', optCtrl = list(xtol_abs = 1e-14, ftol_abs = 1e-15, ftol_rel = 1e-16, xtol_rel = 1e-14, maxeval = 1e5))",
                   glmer = "glmerControl(tolPwrss = 1e-13, optimizer = 'nloptwrap', optCtrl = list(xtol_abs = 1e-12, ftol_abs = 1e-14, ftol_rel = 1e-15, xtol_rel = 1e-12, maxeval = 1e5))")

# ---------------------------------------------------------------- 1. flat
cluster_sizes <- function(g) { t <- table(g); t[order(names(t))] }
robust_entry <- function(fit, cluster_col, d, type) {
  cl <- d[[cluster_col]]
  G <- length(unique(cl)); n <- nobs(fit); k <- length(coef(fit))
  v <- if (is.null(type)) vcovCL(fit, cluster = as.formula(paste0("~", cluster_col))) else
    vcovCL(fit, cluster = as.formula(paste0("~", cluster_col)), type = type)
  used <- if (is.null(type)) (if (class(fit)[1L] == "lm") "HC1" else "HC0") else type
  hc1 <- if (used == "HC1") (n - 1) / (n - k) else 1
  list(cluster = cluster_col,
       call = if (is.null(type)) sprintf("sandwich::vcovCL(fit, cluster = ~%s)", cluster_col) else
         sprintf("sandwich::vcovCL(fit, cluster = ~%s, type = \"%s\")", cluster_col, type),
       type = used, type_is_default = is.null(type), cadjust = TRUE,
       n_clusters = G, nobs = n, n_coef = k,
       adjustment = list(cadjust_factor = G / (G - 1), hc1_factor = hc1, total_factor = G / (G - 1) * hc1,
                         formula = paste0("V = bread %*% meat %*% bread / n with meat = (1/n) sum_g s_g s_g^T, times G/(G-1) (cadjust)",
                                          if (used == "HC1") " times (n-1)/(n-k) (HC1)" else "")),
       std_error = A(unname(sqrt(diag(v)))), vcov = mat(v))
}
flat_entry <- function(case, formula, family, within) {
  d <- cases[[case]]$data
  f <- as.formula(formula)
  fit <- if (family == "gaussian") lm(f, d) else glm(f, family = binomial, data = d)
  s <- summary(fit)
  ct <- coef(s)
  coefs <- lapply(seq_len(nrow(ct)), function(i) list(name = rownames(ct)[i], estimate = ct[i, 1], std_error = ct[i, 2],
                                                     statistic = ct[i, 3], p_value = ct[i, 4]))
  ll <- logLik(fit)
  e <- list(case = case, formula = formula, family = family,
            r_call = if (family == "gaussian") sprintf("lm(%s, data)", formula) else sprintf("glm(%s, family = binomial, data)", formula),
            statistic = if (family == "gaussian") "t" else "z",
            nobs = nobs(fit), coefficients = coefs)
  if (family == "gaussian") {
    e$sigma <- s$sigma; e$r_squared <- s$r.squared; e$adj_r_squared <- s$adj.r.squared
    e$fstatistic <- list(value = unname(s$fstatistic[1]), numdf = unname(s$fstatistic[2]), dendf = unname(s$fstatistic[3]))
  } else {
    e$dispersion <- s$dispersion
    e$null_deviance <- fit$null.deviance; e$df_null <- fit$df.null
    e$iterations <- fit$iter
  }
  e$df_residual <- df.residual(fit); e$deviance <- deviance(fit)
  e$loglik <- as.numeric(ll); e$loglik_df <- attr(ll, "df"); e$aic <- AIC(fit); e$bic <- BIC(fit)
  e$vcov <- mat(vcov(fit))
  types <- if (family == "gaussian") list(NULL, "HC0") else list(NULL, "HC1")
  e$robust <- list()
  for (cc in c("site", within$column)) for (ty in types) e$robust[[length(e$robust) + 1]] <- robust_entry(fit, cc, d, ty)
  e$within_site_cluster <- within
  e
}
nesting <- function(d, col) {  # is col a grouping strictly within site?
  per <- tapply(d$site, d[[col]], function(s) length(unique(s)))
  all(per == 1) && length(per) > length(unique(d$site))
}
stopifnot(nesting(cases$sleepstudy$data, "Subject"))
within <- list(
  sleepstudy = list(column = "Subject", nested_in_site = TRUE, n_groups = length(unique(cases$sleepstudy$data$Subject))),
  exam = list(column = NULL, reason = "pooled.csv has no grouping column below site: site is the school (columns normexam, standLRT, sex, schgend, schavg, site)"),
  contraception = list(column = NULL, reason = "pooled.csv has no grouping column below site: site is the district (columns use, livch, age, urban, site, use01)"),
  cbpp = list(column = NULL, reason = "pooled.csv has no grouping column below site: site is the herd (columns incidence, size, period, site)"))
flat_formulas <- list(
  sleepstudy = list("Reaction ~ Days", "gaussian"),
  exam = list(fixed_part(ref_formula("exam", "reml")), "gaussian"),
  contraception = list(fixed_part(ref_formula("contraception", "laplace")), "binomial"),
  cbpp = list(fixed_part(ref_formula("cbpp", "laplace")), "binomial"))
stopifnot(flat_formulas$exam[[1]] == "normexam ~ standLRT + sex",
          flat_formulas$contraception[[1]] == "use01 ~ age + I(age^2) + urban + livch",
          flat_formulas$cbpp[[1]] == "cbind(incidence, size - incidence) ~ factor(period)")
flat <- lapply(setNames(nm = names(flat_formulas)), function(cs)
  flat_entry(cs, flat_formulas[[cs]][[1]], flat_formulas[[cs]][[2]], within[[cs]]))
message("flat done")

# ---------------------------------------------------------------- 2. anova
mix_p <- function(chisq, df) 0.5 * pchisq(chisq, df, lower.tail = FALSE) +
  0.5 * (if (df - 1 == 0) as.numeric(chisq <= 0) else pchisq(chisq, df - 1, lower.tail = FALSE))
anova_rows <- function(a, formulas, mixture_applies) {
  lapply(seq_len(nrow(a)), function(i) {
    nm <- rownames(a)[i]
    r <- list(model = nm, formula = formulas[[nm]], npar = as.integer(a$npar[i]), aic = a$AIC[i], bic = a$BIC[i],
              loglik = a$logLik[i], deviance = a$deviance[i],
              chisq = a$Chisq[i], df = if (is.na(a$Df[i])) NA else as.integer(a$Df[i]), p_value = a[["Pr(>Chisq)"]][i])
    r$p_value_mixture <- if (i > 1 && mixture_applies) mix_p(a$Chisq[i], a$Df[i]) else NA
    r
  })
}
by_hand <- function(fits, formulas, mixture_applies) {  # same table from logLik, for tight fits and glmer vs glm
  ll <- sapply(fits, function(m) as.numeric(logLik(m)))
  np <- sapply(fits, function(m) attr(logLik(m), "df"))
  o <- order(np); ll <- ll[o]; np <- np[o]; nms <- names(fits)[o]
  lapply(seq_along(o), function(i) {
    r <- list(model = nms[i], formula = formulas[[nms[i]]], npar = as.integer(np[i]),
              aic = -2 * ll[i] + 2 * np[i], bic = -2 * ll[i] + log(nobs(fits[[nms[i]]])) * np[i],
              loglik = ll[i], deviance = -2 * ll[i], chisq = NA, df = NA, p_value = NA, p_value_mixture = NA)
    if (i > 1) {
      r$chisq <- 2 * (ll[i] - ll[i - 1]); r$df <- as.integer(np[i] - np[i - 1])
      r$p_value <- pchisq(r$chisq, r$df, lower.tail = FALSE)
      if (mixture_applies) r$p_value_mixture <- mix_p(r$chisq, r$df)
    }
    r
  })
}
mixture_note <- function(df_extra) sprintf(
  "p_value_mixture = 0.5*P(chisq_%d > Chisq) + 0.5*P(chisq_%d > Chisq) (chisq_0 = point mass at 0): the asymptotic null for adding one random effect (its variance and its covariances with the %d already present) on the same grouping (Self & Liang 1987, Stram & Lee 1994)",
  df_extra - 1L, df_extra, df_extra - 1L)
d_exam <- cases$exam$data; d_con <- cases$contraception$data; d_cb <- cases$cbpp$data; d_ss <- cases$sleepstudy$data
fx_exam <- flat_formulas$exam[[1]]; fx_con <- flat_formulas$contraception[[1]]; fx_cb <- flat_formulas$cbpp[[1]]
f_exam <- list(exam_flat = fx_exam,
               exam_int = paste(fx_exam, "+ (1 | site)"),
               exam_slope = paste(fx_exam, "+ (standLRT | site)"))
stopifnot(f_exam$exam_slope == ref_formula("exam", "reml"))
f_con <- list(con_flat = fx_con,
              con_int = paste(fx_con, "+ (1 | site)"),
              con_slope = paste(fx_con, "+ (urban | site)"))
stopifnot(f_con$con_int == ref_formula("contraception", "laplace"))
f_cb <- list(cbpp_flat = fx_cb, cbpp_int = ref_formula("cbpp", "laplace"))
f_ss <- list(sleep_flat = "Reaction ~ Days", sleep_slope = ref_formula("sleepstudy", "reml"))

exam_int <- lmer(as.formula(f_exam$exam_int), d_exam, REML = TRUE)
exam_slope <- lmer(as.formula(f_exam$exam_slope), d_exam, REML = TRUE)
exam_flat <- lm(as.formula(f_exam$exam_flat), d_exam)
sleep_slope <- lmer(as.formula(f_ss$sleep_slope), d_ss, REML = TRUE)
sleep_flat <- lm(as.formula(f_ss$sleep_flat), d_ss)
con_int <- with_warnings(glmer(as.formula(f_con$con_int), d_con, family = binomial))
con_slope <- with_warnings(glmer(as.formula(f_con$con_slope), d_con, family = binomial))
con_flat <- glm(as.formula(f_con$con_flat), family = binomial, data = d_con)
cbpp_int <- with_warnings(glmer(as.formula(f_cb$cbpp_int), d_cb, family = binomial))
cbpp_flat <- glm(as.formula(f_cb$cbpp_flat), family = binomial, data = d_cb)
# tight ML fits for the same comparisons
ml_tight <- function(f, d) lmer(as.formula(f), d, REML = FALSE, control = tight_lmer)
gl_tight <- function(f, d) glmer(as.formula(f), d, family = binomial, control = tight_glmer)
T_exam_int <- ml_tight(f_exam$exam_int, d_exam); T_exam_slope <- ml_tight(f_exam$exam_slope, d_exam)
T_sleep_slope <- ml_tight(f_ss$sleep_slope, d_ss)
T_con_int <- with_warnings(gl_tight(f_con$con_int, d_con)); T_con_slope <- with_warnings(gl_tight(f_con$con_slope, d_con))
T_cb_int <- with_warnings(gl_tight(f_cb$cbpp_int, d_cb))

anova_entry <- function(name, case, a_expr, fits_tight, formulas, mixture_applies, df_extra, notes, fit_warnings = list()) {
  a <- with_warnings(a_expr)
  e <- list(case = case, comparison = name,
            r_call = gsub("$value", "", deparse(substitute(a_expr), width.cutoff = 500L), fixed = TRUE),
            refit_ml = any(grepl("refitting model", a$messages)),
            r_messages = A(a$messages),
            table = anova_rows(a$value, formulas, mixture_applies),
            mixture = if (mixture_applies) mixture_note(df_extra) else
              "not applicable: the null for this comparison is not a 50:50 mixture of chi-squares (more than one random effect added)",
            tight = list(description = paste("the same table from logLik of ML fits at tight tolerances:",
                                             if (any(sapply(fits_tight, is, "glmerMod"))) tight_desc$glmer else tight_desc$lmer,
                                             "(flat models: lm/glm); rows ordered by npar"),
                         table = by_hand(fits_tight, formulas, mixture_applies)),
            notes = notes)
  if (length(fit_warnings)) e$fit_warnings <- fit_warnings
  e
}
anova <- list(
  exam_intercept_vs_slope = anova_entry("exam_intercept_vs_slope", "exam", anova(exam_int, exam_slope),
    list(exam_int = T_exam_int, exam_slope = T_exam_slope), f_exam, TRUE, 2L,
    "both models fitted with REML = TRUE; anova() refits them by ML (refit_ml) before comparing, as lme4 prints 'refitting model(s) with ML (instead of REML)'"),
  exam_flat_vs_intercept = anova_entry("exam_flat_vs_intercept", "exam", anova(exam_int, exam_flat),
    list(exam_flat = exam_flat, exam_int = T_exam_int), f_exam, TRUE, 1L,
    "lmer REML fit vs lm; anova() refits the lmer model by ML; lm's logLik is the ML log-likelihood"),
  exam_flat_vs_slope = anova_entry("exam_flat_vs_slope", "exam", anova(exam_slope, exam_flat),
    list(exam_flat = exam_flat, exam_slope = T_exam_slope), f_exam, FALSE, 3L,
    "lmer REML fit vs lm; anova() refits the lmer model by ML"),
  sleepstudy_flat_vs_slope = anova_entry("sleepstudy_flat_vs_slope", "sleepstudy", anova(sleep_slope, sleep_flat),
    list(sleep_flat = sleep_flat, sleep_slope = T_sleep_slope), f_ss, FALSE, 3L,
    "lmer REML fit vs lm; anova() refits the lmer model by ML; the random effects are by Subject (within site)"),
  contraception_intercept_vs_urban_slope = anova_entry("contraception_intercept_vs_urban_slope", "contraception",
    anova(con_int$value, con_slope$value),
    list(con_int = T_con_int$value, con_slope = T_con_slope$value), f_con, TRUE, 2L,
    "glmer, Laplace (nAGQ = 1), default control; no refit (GLMMs are ML fits)",
    fit_warnings = list(default = list(con_int = con_int$warnings, con_slope = con_slope$warnings),
                        tight = list(con_int = T_con_int$warnings, con_slope = T_con_slope$warnings))),
  contraception_flat_vs_intercept = anova_entry("contraception_flat_vs_intercept", "contraception",
    anova(con_int$value, con_flat),
    list(con_flat = con_flat, con_int = T_con_int$value), f_con, TRUE, 1L,
    "glmer (Laplace) vs glm; lme4's anova() accepts the glm and uses its logLik (binary data: identical likelihood scale); 'by_hand' recomputes Chisq = 2*(logLik(glmer) - logLik(glm))"),
  contraception_flat_vs_urban_slope = anova_entry("contraception_flat_vs_urban_slope", "contraception",
    anova(con_slope$value, con_flat),
    list(con_flat = con_flat, con_slope = T_con_slope$value), f_con, FALSE, 3L,
    "glmer (Laplace) vs glm"),
  cbpp_flat_vs_intercept = anova_entry("cbpp_flat_vs_intercept", "cbpp", anova(cbpp_int$value, cbpp_flat),
    list(cbpp_flat = cbpp_flat, cbpp_int = T_cb_int$value), f_cb, TRUE, 1L,
    "glmer (Laplace) vs glm on aggregated binomial rows; both logLiks include the log binomial coefficients (family aic), so they are comparable"))
# anova() names rows after the R expressions (con_int$value for glmer fits kept with their warnings)
for (nm in names(anova)) {
  fm <- c(f_exam, f_con, f_cb, f_ss)
  anova[[nm]]$table <- lapply(anova[[nm]]$table, function(r) {
    r$model <- sub("\\$value$", "", r$model); r$formula <- fm[[r$model]]; r })
}
# glmer vs glm by hand from the default fits (what anova() does, recomputed)
anova$contraception_flat_vs_intercept$by_hand_default <- by_hand(list(con_flat = con_flat, con_int = con_int$value), f_con, TRUE)
anova$contraception_flat_vs_urban_slope$by_hand_default <- by_hand(list(con_flat = con_flat, con_slope = con_slope$value), f_con, FALSE)
anova$cbpp_flat_vs_intercept$by_hand_default <- by_hand(list(cbpp_flat = cbpp_flat, cbpp_int = cbpp_int$value), f_cb, TRUE)
message("anova done")

# ---------------------------------------------------------------- 3. confint_profile
zcrit <- qnorm(0.975)
ci_rows <- function(ci, method) lapply(seq_len(nrow(ci)), function(i)
  list(parameter = rownames(ci)[i], lower = unname(ci[i, 1]), upper = unname(ci[i, 2]), method = method))
# Tight profile: solve zeta(x) = -+qnorm(0.975) with uniroot, where
# zeta(x) = sign(x - xhat) sqrt(D(x) - Dmin) and D is the ML deviance profiled
# over all other parameters (lme4 profiles the ML deviance even for REML fits:
# devfun2() calls refitML()). Variance parameters on lme4's sd/cor/sigma scale
# use lme4:::devfun2 (beta profiled out exactly), other parameters optimised by
# minqa::bobyqa; fixed effects are profiled by refitting the ML model with
# x * X[, j] as an offset at tight tolerances.
tight_profile <- function(fit, default_ci, d) {
  mlfit <- lmer(formula(fit), d, REML = FALSE, control = tight_lmer)
  dd <- lme4:::devfun2(mlfit, useSc = TRUE, signames = TRUE)
  np <- length(getME(mlfit, "theta")) + 1L
  opt0 <- attr(dd, "optimum")[seq_len(np)]
  vnames <- names(opt0)
  cnms <- mlfit@cnms
  # bounds in the sd/cor parametrisation
  lo <- rep(0, np); hi <- rep(Inf, np)
  k <- 0
  for (g in seq_along(cnms)) { q <- length(cnms[[g]]); for (i in seq_len(q)) for (j in i:q) { k <- k + 1; if (i != j) { lo[k] <- -1; hi[k] <- 1 } } }
  stopifnot(k == np - 1L)
  inner <- function(fixidx, fixval, start) {
    free <- setdiff(seq_len(np), fixidx)
    f <- function(p) { x <- numeric(np); x[free] <- p; if (length(fixidx)) x[fixidx] <- fixval; dd(x) }
    st <- pmin(pmax(start[free], lo[free] + 1e-8), hi[free] - 1e-8)
    best <- NULL
    for (rep in 1:3) {
      r <- minqa::bobyqa(st, f, lower = lo[free], upper = hi[free],
                         control = list(rhobeg = 0.05 * max(1e-3, min(abs(st))), rhoend = 1e-11, maxfun = 1e5))
      if (is.null(best) || r$fval < best$fval - 1e-13) { best <- r; st <- r$par } else break
    }
    x <- numeric(np); x[free] <- best$par; if (length(fixidx)) x[fixidx] <- fixval
    list(dev = best$fval, par = x)
  }
  full <- inner(integer(0), NULL, opt0)
  dmin <- min(full$dev, deviance(mlfit))
  xhat <- c(full$par, fixef(mlfit))
  names(xhat) <- c(vnames, names(fixef(mlfit)))
  X <- getME(mlfit, "X"); y <- getME(mlfit, "y")
  mf <- d
  re_part <- paste(vapply(findbars(formula(fit)), function(b) paste0("(", deparse(b), ")"), ""), collapse = " + ")
  fe_dev <- function(j, v) {
    dat <- mf; dat$.y <- y; dat$.off <- v * X[, j]; dat$.X <- X[, -j, drop = FALSE]
    f <- as.formula(paste(".y ~ 0 + .X + offset(.off) +", re_part))
    deviance(lmer(f, dat, REML = FALSE, control = tight_lmer))
  }
  zeta_fun <- function(idx) {
    last <- xhat
    function(v) {
      if (idx <= np) { r <- inner(idx, v, last); dev <- r$dev } else dev <- fe_dev(idx - np, v)
      sign(v - xhat[idx]) * sqrt(max(dev - dmin, 0))
    }
  }
  all_names <- names(xhat)
  res <- lapply(seq_along(all_names), function(idx) {
    z <- zeta_fun(idx)
    bounds <- sapply(c(-1, 1), function(s) {
      target <- s * zcrit
      guess <- default_ci[all_names[idx], if (s < 0) 1 else 2]
      lim <- if (idx <= np) (if (s < 0) lo[idx] else hi[idx]) else s * Inf
      if (is.na(guess)) guess <- xhat[idx] + s * 0.5 * abs(xhat[idx])
      if (is.finite(lim) && abs(guess - lim) < 1e-12) { if (abs(z(lim)) < zcrit) return(lim) }
      a <- xhat[idx]; b <- guess + s * 0.05 * abs(guess - xhat[idx])
      if (is.finite(lim)) b <- if (s < 0) max(b, lim) else min(b, lim)
      while (s * (z(b) - target) < 0) {
        if (is.finite(lim) && b == lim) return(lim)
        b <- xhat[idx] + 2 * (b - xhat[idx]); if (is.finite(lim)) b <- if (s < 0) max(b, lim) else min(b, lim)
      }
      a2 <- guess - s * 0.05 * abs(guess - xhat[idx]); if (s * (z(a2) - target) < 0) a <- a2
      uniroot(function(v) z(v) - target, sort(c(a, b)), tol = 1e-12 * max(1, abs(guess)), maxiter = 200)$root
    })
    list(parameter = all_names[idx], lower = bounds[1], upper = bounds[2], method = "profile_tight")
  })
  list(rows = res, ml_deviance_min = dmin, ml_estimates = as.list(xhat))
}
confint_entry <- function(case, formula) {
  d <- cases[[case]]$data
  fit <- lmer(as.formula(formula), d, REML = TRUE)
  pr <- with_warnings(confint(fit, method = "profile"))
  wald <- confint(fit, method = "Wald")
  tp <- tight_profile(fit, pr$value, d)
  list(case = case, formula = formula, reml = TRUE,
       r_call = "confint(lmer(formula, data, REML = TRUE), method = \"profile\") and method = \"Wald\"",
       parameter_names = "lme4 oldNames: .sig01, .sig02, ... are the site/grouping sds and correlations in the order of VarCorr (sd, cor, sd for a 2x2 block), .sigma the residual sd",
       profile = ci_rows(pr$value, "profile"),
       profile_warnings = A(pr$warnings),
       profile_tight = tp$rows,
       profile_tight_method = paste(
         "Bounds solved directly with uniroot (tol 1e-12 relative) on zeta(x) = sign(x - xhat) * sqrt(D(x) - Dmin) = -/+ qnorm(0.975),",
         "D = ML deviance profiled over every other parameter. Like lme4 (devfun2() calls refitML), this profiles the ML deviance even though the model is fitted by REML.",
         "Variance parameters (sd/cor/sigma scale): lme4:::devfun2 with beta profiled out exactly, the other variance parameters optimised with minqa::bobyqa (rhoend 1e-11, restarted until no improvement);",
         "fixed effects: ML lmer refit with the coefficient held as an offset,", tight_desc$lmer, ".",
         "Dmin = the minimum of that deviance over all parameters (tight ML fit). lme4's own confint interpolates a spline through a profile grid (delta.cutoff 1/8), so it differs from these by roughly 1e-5 to 1e-3 relative."),
       ml_deviance_min = tp$ml_deviance_min, ml_estimates = tp$ml_estimates,
       wald = ci_rows(wald, "Wald"),
       wald_note = "lme4's Wald intervals exist only for fixed effects; the variance-parameter rows are NA in R and null here. Wald uses the REML fit's estimates and SEs with qnorm(0.975).")
}
confint_profile <- list(
  sleepstudy = confint_entry("sleepstudy", ref_formula("sleepstudy", "reml")),
  exam = confint_entry("exam", ref_formula("exam", "reml")))
message("confint done")

# ---------------------------------------------------------------- 4. satterthwaite
satt_entry <- function(case, formula) {
  d <- cases[[case]]$data
  rows <- function(ct, method) lapply(seq_len(nrow(ct)), function(i)
    list(name = rownames(ct)[i], estimate = ct[i, "Estimate"], std_error = ct[i, "Std. Error"], df = ct[i, "df"],
         t = ct[i, "t value"], p_value = ct[i, "Pr(>|t|)"], method = method))
  fit <- lmerTest::lmer(as.formula(formula), d, REML = TRUE)
  fitT <- lmerTest::lmer(as.formula(formula), d, REML = TRUE, control = tight_lmer)
  e <- list(case = case, formula = formula, reml = TRUE,
            r_call = "summary(lmerTest::lmer(formula, data, REML = TRUE), ddf = \"Satterthwaite\")$coefficients",
            satterthwaite = rows(summary(fit, ddf = "Satterthwaite")$coefficients, "Satterthwaite"),
            satterthwaite_tight_fit = rows(summary(fitT, ddf = "Satterthwaite")$coefficients, "Satterthwaite"),
            tight_fit_note = paste("the same, fitted with", tight_desc$lmer, "- the default fit's theta is only near the optimum, which moves df by up to ~3e-5 relative here;",
                                   "lmerTest's derivatives of the vcov in the variance parameters are numerical (numDeriv, Richardson), good to ~1e-7 (sleepstudy is balanced: exact df 17)"))
  if (has_kr) {
    e$kenward_roger <- rows(summary(fit, ddf = "Kenward-Roger")$coefficients, "Kenward-Roger")
    e$kenward_roger_tight_fit <- rows(summary(fitT, ddf = "Kenward-Roger")$coefficients, "Kenward-Roger")
    e$kenward_roger_note <- "lmerTest with pbkrtest: std_error is the Kenward-Roger adjusted SE (sqrt of diag of pbkrtest::vcovAdj), df from pbkrtest"
  }
  e
}
satterthwaite <- list(
  sleepstudy = satt_entry("sleepstudy", ref_formula("sleepstudy", "reml")),
  exam = satt_entry("exam", ref_formula("exam", "reml")))
message("satterthwaite done")

# ---------------------------------------------------------------- 5. icc
chi95 <- qchisq(0.95, 1)
icc_of <- function(th) th^2 / (1 + th^2)
theta_ci <- function(devf, that, dmin) {
  g <- function(t) devf(t) - dmin - chi95
  lower <- if (g(0) <= 0) 0 else uniroot(g, c(0, that), tol = 1e-14)$root
  b <- max(2 * that, 1e-3); while (g(b) < 0) b <- 2 * b
  upper <- uniroot(g, c(that, b), tol = 1e-14)$root
  c(lower, upper)
}
size_stats <- function(g) {
  m <- as.numeric(cluster_sizes(g)); G <- length(m); N <- sum(m); mbar <- N / G
  sdp <- sqrt(mean((m - mbar)^2)); sds <- if (G > 1) sd(m) else 0
  list(n_clusters = G, n_obs = N, mean_size = mbar, sd_size_population = sdp, sd_size_sample = sds,
       cv_population = sdp / mbar, cv_sample = sds / mbar)
}
deffs <- function(icc, st) list(
  equal = 1 + (st$mean_size - 1) * icc,
  unequal_cv_population = 1 + ((st$cv_population^2 + 1) * st$mean_size - 1) * icc,
  unequal_cv_sample = 1 + ((st$cv_sample^2 + 1) * st$mean_size - 1) * icc)
icc_lmm_entry <- function(case, formula, group) {
  d <- cases[[case]]$data
  out <- list(case = case, formula = formula, grouping = group, family = "gaussian")
  for (reml in c(TRUE, FALSE)) {
    fit <- lmer(as.formula(formula), d, REML = reml, control = tight_lmer)
    devf <- getME(fit, "devfun") # profiled (REML) deviance as a function of theta = sigma_b / sigma
    that <- getME(fit, "theta"); dmin <- min(devf(that), if (reml) REMLcrit(fit) else deviance(fit))
    vc <- as.data.frame(VarCorr(fit))
    ci <- theta_ci(devf, that, dmin)
    key <- if (reml) "reml" else "ml"
    out[[key]] <- list(var_group = vc$vcov[1], var_residual = vc$vcov[2], theta = unname(that), icc = icc_of(unname(that)),
                       icc_check = vc$vcov[1] / (vc$vcov[1] + vc$vcov[2]), singular = isSingular(fit),
                       icc_ci95 = list(lower = icc_of(ci[1]), upper = icc_of(ci[2]),
                                       theta_lower = ci[1], theta_upper = ci[2]))
  }
  out$icc_ci_method <- paste(
    "Profile-likelihood interval. ICC = theta^2/(1+theta^2) with theta = sigma_group/sigma is monotone in theta, and lme4's devfun(theta) (getME(fit, 'devfun'))",
    "is the deviance (REML criterion for 'reml', -2 logLik for 'ml') profiled over sigma and beta in closed form. The interval is {theta: devfun(theta) - min <= qchisq(0.95, 1)},",
    "both ends found by uniroot (tol 1e-14) and mapped to the ICC scale; the lower end is 0 when devfun(0) - min <= qchisq(0.95, 1). Fits use", tight_desc$lmer, ".")
  out$cluster_sizes <- as.list(cluster_sizes(d[[group]]))
  out$cluster_size_stats <- size_stats(d[[group]])
  out$design_effect_reml <- deffs(out$reml$icc, out$cluster_size_stats)
  out$design_effect_formulas <- "equal: 1 + (mbar - 1) ICC; unequal: 1 + ((CV^2 + 1) mbar - 1) ICC with CV = sd(sizes)/mbar, sd with divisor G (population; then (CV^2+1) mbar = sum(m^2)/N) or G - 1 (sample)"
  out
}
icc_glmm_entry <- function(case, formula) {
  d <- cases[[case]]$data
  fit <- glmer(as.formula(formula), d, family = binomial, control = tight_glmer)
  v <- as.data.frame(VarCorr(fit))$vcov[1]
  icc <- v / (v + pi^2 / 3)
  st <- size_stats(d$site)
  list(case = case, formula = formula, grouping = "site", family = "binomial", link = "logit",
       fit = paste("glmer Laplace,", tight_desc$glmer), var_group = v, icc_latent = icc,
       icc_method = "latent-scale ICC = sigma_site^2 / (sigma_site^2 + pi^2/3) (logistic residual variance); no interval computed",
       cluster_sizes = as.list(cluster_sizes(d$site)), cluster_size_stats = st,
       design_effect = deffs(icc, st))
}
icc <- list(
  sleepstudy_site = icc_lmm_entry("sleepstudy", "Reaction ~ Days + (1 | site)", "site"),
  sleepstudy_subject = icc_lmm_entry("sleepstudy", "Reaction ~ Days + (1 | Subject)", "Subject"),
  exam_site = icc_lmm_entry("exam", paste(fx_exam, "+ (1 | site)"), "site"),
  contraception_site = icc_glmm_entry("contraception", f_con$con_int),
  cbpp_site = icc_glmm_entry("cbpp", f_cb$cbpp_int))
icc$sleepstudy_site$note <- "as the brief asked: random intercept by site (3 sites); sleepstudy's real clustering is by Subject (within site), see sleepstudy_subject"
icc$cbpp_site$note <- "cluster sizes count rows (herd-periods), not trials (cluster_trials); the design effect on the trial scale would use size"
icc$cbpp_site$cluster_trials <- as.list(tapply(d_cb$size, d_cb$site, sum)[names(cluster_sizes(d_cb$site))])
message("icc done")

# ---------------------------------------------------------------- assemble
pkgs <- c("lme4", "lmerTest", "pbkrtest", "sandwich", "jsonlite", "Matrix", "minqa", "nloptr", "numDeriv")
result <- list(
  generator = "Tests/Fixtures/tools/inference-references.R",
  issue = 14L,
  r_version = R.version.string,
  packages = lapply(setNames(nm = pkgs), function(p) if (requireNamespace(p, quietly = TRUE)) as.character(packageVersion(p)) else NULL),
  cases = lapply(cases, function(cs) list(case = cs$case, site_column = cs$ref$site_column, data = file.path("reference", cs$case, "pooled.csv"),
                                         pooled_md5 = cs$md5, n_rows = nrow(cs$data), n_sites = length(unique(cs$data$site)))),
  conventions = list(
    numbers = "every double is written with the shortest of %.15g/%.16g/%.17g that reads back to the identical double",
    matrices = "{names, row_major}: rows and columns in coefficient order",
    null = "null marks a value R itself leaves undefined: first anova row's chisq/df/p, p_value_mixture where no 50:50 mixture applies, Wald bounds of variance parameters",
    formulas = "written as fedmix takes them; site is the site column of every case"),
  flat = flat, anova = anova, confint_profile = confint_profile, satterthwaite = satterthwaite, icc = icc)
if (!has_kr) result$kenward_roger_missing <- "pbkrtest is not installed"
dir.create(dirname(out_path), recursive = TRUE, showWarnings = FALSE)
writeLines(to_json(result), out_path)
message("wrote ", out_path)
