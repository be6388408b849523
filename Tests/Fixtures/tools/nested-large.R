# Reference for a 3-level nested model with more than 2,000 patients at one
# site (visits in episodes in patients in sites): fedmix holds the nested
# factors level by level there (NestedChain) instead of a dense tail capped
# at 2,000 random effects. Simulated (set.seed(19)); written to
# Tests/Fixtures/reference/nested-large/{sites/*.csv,pooled.csv,reference.json}.
# lme4 on the pooled rows, polished with bobyqa from several starts at tight
# tolerances as in hard-cases.R.
#   Rscript Tests/Fixtures/tools/nested-large.R   (from the repository root)
suppressPackageStartupMessages({ library(lme4); library(jsonlite) })
root <- file.path("Tests", "Fixtures", "reference")
name <- "nested-large"
quiet <- function(e) suppressWarnings(suppressMessages(e))

polish <- function(f, start, lower, rhobeg = 0.02, maxfun = 50000) {
  best <- list(par = start, value = f(start))
  for (k in 1:3) {
    r <- tryCatch(minqa::bobyqa(best$par, f, lower = lower, control = list(rhobeg = rhobeg, rhoend = 1e-12, maxfun = maxfun)),
                  error = function(e) NULL)
    if (is.null(r) || r$fval >= best$value) break
    best <- list(par = r$par, value = r$fval)
    rhobeg <- rhobeg / 4
  }
  best
}
vc_rows <- function(m) {
  vc <- as.data.frame(VarCorr(m))
  lapply(seq_len(nrow(vc)), function(k) list(grp = vc$grp[k], var1 = if (is.na(vc$var1[k])) NULL else vc$var1[k],
                                             var2 = if (is.na(vc$var2[k])) NULL else vc$var2[k],
                                             vcov = vc$vcov[k], sdcor = vc$sdcor[k]))
}
fe_rows <- function(est, se) lapply(seq_along(est), function(k) list(name = names(est)[k], estimate = unname(est[k]), std_error = unname(se[k])))
lmm_ref <- function(formula, d, reml, starts) {
  form <- as.formula(formula)
  m_def <- quiet(lmer(form, d, REML = reml))
  dd <- lmer(form, d, REML = reml, devFunOnly = TRUE)
  lower <- getME(m_def, "lower")
  cands <- list(list(name = "lme4-default", par = getME(m_def, "theta"), value = dd(getME(m_def, "theta"))))
  for (st in c(list(getME(m_def, "theta")), starts)) {
    p <- polish(dd, st, lower)
    cands[[length(cands) + 1]] <- list(name = sprintf("bobyqa from (%s)", paste(signif(st, 3), collapse = ", ")), par = p$par, value = p$value)
  }
  best <- cands[[which.min(sapply(cands, `[[`, "value"))]]
  m <- quiet(lmer(form, d, REML = reml, start = list(theta = best$par),
                  control = lmerControl(optimizer = "bobyqa", calc.derivs = FALSE,
                                        optCtrl = list(rhobeg = max(1e-10, 1e-9 * max(abs(best$par))), rhoend = 1e-12, maxfun = 60))))
  s <- summary(m)$coefficients
  obj <- if (reml) REMLcrit(m) else deviance(m)
  list(formula = formula, lme4_formula = formula, method = if (reml) "REML" else "ML", family = "gaussian",
       weights = NULL, n_obs = nobs(m), n_groups = as.list(ngrps(m)),
       objective = obj, theta = unname(getME(m, "theta")), boundary = any(getME(m, "theta")[lower == 0] < 1e-7),
       singular = isSingular(m), fixed_effects = fe_rows(s[, 1], s[, 2]), sigma = sigma(m),
       variance_components = vc_rows(m), loglik = as.numeric(logLik(m)), source = best$name,
       lme4_default_objective = if (reml) REMLcrit(m_def) else deviance(m_def),
       lme4_default_fixed_effects = fe_rows(fixef(m_def), sqrt(diag(as.matrix(vcov(m_def))))))
}

# Patients per site: "a" has 2,100 (over the dense tail's 2,000), "b" and "c" 60.
set.seed(19)
rows <- list()
for (s in c("a", "b", "c")) {
  np <- if (s == "a") 2100 else 60
  u_site <- rnorm(1, 0, 0.8)
  for (p in seq_len(np)) {
    u_pat <- rnorm(1, 0, 1.0)
    for (e in seq_len(sample(1:3, 1))) {
      u_ep <- rnorm(1, 0, 0.6)
      nv <- sample(1:3, 1)
      x <- round(rnorm(nv), 4)
      y <- round(2 + 0.5 * x + u_site + u_pat + u_ep + rnorm(nv, 0, 0.7), 4)
      # Patient and episode codes are local: "p1" recurs at every site, "e1" in every patient.
      rows[[length(rows) + 1]] <- data.frame(y = y, x = x, site = s, patient = paste0("p", p), episode = paste0("e", e))
    }
  }
}
d <- do.call(rbind, rows)
dir <- file.path(root, name, "sites")
unlink(dir, recursive = TRUE)
dir.create(dir, recursive = TRUE, showWarnings = FALSE)
for (s in unique(d$site)) write.csv(d[d$site == s, ], file.path(dir, paste0(s, ".csv")), row.names = FALSE)
write.csv(d, file.path(root, name, "pooled.csv"), row.names = FALSE)
d <- read.csv(file.path(root, name, "pooled.csv"), colClasses = c(site = "character", patient = "character", episode = "character"))

f <- "y ~ x + (1 | site/patient/episode)"
starts <- list(c(0.5, 0.5, 0.5), c(1, 1.5, 1))
case <- list(case = name, site_column = "site", source = "simulated (set.seed(19)): 2,100 patients at site a, 60 at b and c",
             fits = list(reml = lmm_ref(f, d, TRUE, starts), ml = lmm_ref(f, d, FALSE, starts)),
             lme4_version = as.character(packageVersion("lme4")), generator = "Tests/Fixtures/tools/nested-large.R")
writeLines(toJSON(case, auto_unbox = TRUE, digits = I(17), null = "null", pretty = TRUE), file.path(root, name, "reference.json"))
for (k in names(case$fits)) {
  fk <- case$fits[[k]]
  cat(sprintf("%s/%s: n %d, groups %s, objective %s (%s), theta %s\n", name, k, fk$n_obs, paste(unlist(fk$n_groups), collapse = "/"),
              format(fk$objective, digits = 15), fk$source, paste(signif(as.numeric(unlist(fk$theta)), 6), collapse = " ")))
}
