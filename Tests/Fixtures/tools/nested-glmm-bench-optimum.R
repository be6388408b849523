# Is fedmix's nested-GLMM bench fit the true optimum? (BENCHMARKS.md,
# "A nested GLMM beyond the dense tail".) `fedmix bench --models nested-glmm
# --lme4` printed −2 log L 240606.564538 for fedmix and 240609.243843 for glmer
# at its defaults: 2.68 apart. Here both points are put into lme4's own Laplace
# deviance function (the one glmer(..., devFunOnly = TRUE) returns, built as
# glmer builds it, PIRLS converged tightly: see below; nAGQ = 1; stage 2 takes
# c(theta, beta), theta = relative SDs in lme4's order episode:(patient:site),
# patient:site, site — checked with getME(, "theta") on a small fit), so the
# two fits are judged by one function, not each by its own.
#
# Inputs: the bench's rows as CSV (site, patient, episode, x, died; the bench
# writes the same columns for R: NestedVisitsData.csv in BenchNested.swift,
# seed 20260101, 20,000 patients per site: 239,824 rows; they were written
# once by a copy of that generator, not kept in the repository so that the
# generator has one copy), and fedmix's point (theta and fixed_effects of `fedmix local
# ROWS.csv --split-by site --formula ... --family binomial --format json`).
# glmer at its defaults takes ~16 minutes on these rows; its fit is cached in
# an .rds so the evaluation can be rerun without refitting.
#
#   Rscript Tests/Fixtures/tools/nested-glmm-bench-optimum.R ROWS.csv GLMER.rds OUT.json \
#       [THETA_EPISODE,THETA_PATIENT,THETA_SITE,BETA_0,BETA_X]
#
# Without fedmix's point only glmer's fit (cached) and its deviance are reported;
# GLMER.rds "-" leaves glmer out.
# With it: the deviance at both points, their difference, glmer's convergence
# messages, a finite-difference gradient at fedmix's point (one-sided for an SD
# within the step of its bound 0), and the deviance along the episode SD
# at fedmix's other values, to show whether 0 is where that SD belongs; the
# same function at lme4's default PIRLS tolerance; glmmTMB's Laplace objective
# at both points; bobyqa on lme4's function started at fedmix's point.
# Result (2026-11-30): Tests/Fixtures/nested-glmm-bench-optimum.json, BENCHMARKS.md.
suppressMessages({ library(lme4); library(glmmTMB); library(jsonlite) })
args <- commandArgs(trailingOnly = TRUE)
stopifnot(length(args) >= 3)
rows_csv <- args[[1]]; glmer_rds <- args[[2]]; out_json <- args[[3]]
fedmix_point <- if (length(args) >= 4) as.numeric(strsplit(args[[4]], ",")[[1]]) else NULL
if (!is.null(fedmix_point)) stopifnot(length(fedmix_point) == 5)

d <- read.csv(rows_csv)
stopifnot(nrow(d) == 239824)
form <- died ~ x + (1 | site/patient/episode)

if (glmer_rds == "-") {
  g <- NULL   # fedmix's point only
} else if (file.exists(glmer_rds)) {
  g <- readRDS(glmer_rds)
} else {
  seconds <- system.time(f <- glmer(form, family = binomial, data = d))[["elapsed"]]
  g <- list(theta = getME(f, "theta"), beta = fixef(f), minus2logLik = -2 * as.numeric(logLik(f)),
            seconds = seconds, messages = c(f@optinfo$conv$lme4$messages, f@optinfo$warnings),
            feval = f@optinfo$feval, optimizer = f@optinfo$optimizer)
  saveRDS(g, glmer_rds)
}
if (!is.null(g)) cat("glmer theta", sprintf("%.8f", g$theta), " beta", sprintf("%.8f", g$beta), " -2logL", sprintf("%.6f", g$minus2logLik), "\n")

# glmer(devFunOnly = TRUE) first runs glmer's whole first stage (nAGQ = 0) only
# to leave its PIRLS start (lp0) at that stage's optimum: minutes here. The
# same function is built directly (as glmer does: mkGlmerDevfun, then
# updateGlmerDevfun), with PIRLS converged tightly (tolPwrss 1e-13): at lme4's
# default 1e-7 the value depends on where PIRLS starts, by up to 0.08 on a
# 3,641-row version of these rows (--patients 300); built this way and at 1e-13
# it agrees with glmmTMB's Laplace objective there to 1.4e-7 (glmer's
# devFunOnly function, even at 1e-13, stays 1.1e-5 off).
t0 <- Sys.time()
glmod <- glFormula(form, data = d, family = binomial)
dev <- updateGlmerDevfun(do.call(mkGlmerDevfun, c(glmod, list(nAGQ = 0))), glmod$reTrms, nAGQ = 1)
environment(dev)$tolPwrss <- 1e-13; environment(dev)$maxit <- 1000L
message("deviance function built in ", format(Sys.time() - t0))
at <- function(p) dev(p)
result <- list(rows = nrow(d))
if (!is.null(g)) result$glmer <- list(theta = unname(g$theta), beta = unname(g$beta),
                                      minus2logLik_reported = g$minus2logLik, seconds = g$seconds, messages = g$messages,
                                      feval = g$feval, optimizer = g$optimizer)

if (!is.null(fedmix_point)) {
  t0 <- Sys.time()
  dev_fedmix <- at(fedmix_point)
  message("one evaluation: ", format(Sys.time() - t0), sprintf(": %.6f", dev_fedmix))
  dev_glmer <- if (is.null(g)) NA else at(c(unname(g$theta), unname(g$beta)))
  dev_fedmix_again <- at(fedmix_point)   # the deviance function keeps PIRLS state: check it does not matter
  message(sprintf("lme4 deviance at fedmix's point %.6f (again %.6f), at glmer's %.6f: fedmix lower by %.6f\n",
              dev_fedmix, dev_fedmix_again, dev_glmer, dev_glmer - dev_fedmix))
  # Central differences (one-sided forward for a parameter at its bound 0).
  h <- 1e-4
  grad <- sapply(seq_along(fedmix_point), function(k) {
    e <- replace(numeric(5), k, h)
    if (k <= 3 && fedmix_point[[k]] < h) (at(fedmix_point + e) - dev_fedmix) / h
    else (at(fedmix_point + e) - at(fedmix_point - e)) / (2 * h)
  })
  message("finite-difference gradient at fedmix's point ", paste(sprintf("%.4g", grad), collapse = " "))
  episode_sd <- c(0.01, 0.05, 0.1, 0.2)
  along <- sapply(episode_sd, function(s) at(replace(fedmix_point, 1, s)))
  message("deviance along the episode SD: ", paste(sprintf("%g: %.6f", episode_sd, along), collapse = ", "))
  # A third opinion: glmmTMB's Laplace objective (exact inner Newton) at both
  # points, evaluated, not fitted (its parameters: β, then log SDs in lme4's order).
  t0 <- Sys.time()
  tmb_struc <- glmmTMB(form, d, family = binomial, doFit = FALSE)
  obj <- with(tmb_struc, TMB::MakeADFun(data = data.tmb, parameters = parameters, map = mapArg, random = randomArg,
                                        silent = TRUE, DLL = "glmmTMB"))
  tmb <- function(p) 2 * obj$fn(c(p[4:5], log(p[1:3])))
  tmb_fedmix <- tmb(fedmix_point)
  tmb_glmer <- if (is.null(g)) NA else tmb(c(unname(g$theta), unname(g$beta)))
  message(sprintf("glmmTMB's Laplace objective at fedmix's point %.6f, at glmer's %.6f (%s)", tmb_fedmix, tmb_glmer, format(Sys.time() - t0)))
  # Can lme4's own function be pushed lower from fedmix's point? bobyqa on it.
  t0 <- Sys.time()
  polish <- minqa::bobyqa(fedmix_point, at, lower = c(0, 0, 0, -Inf, -Inf),
                          control = list(rhobeg = 0.01, rhoend = 1e-7, maxfun = 500))
  message(sprintf("bobyqa on lme4's deviance from fedmix's point: %.6f after %d evaluations (%s) at %s",
                  polish$fval, polish$feval, format(Sys.time() - t0), paste(sprintf("%.6f", polish$par), collapse = ", ")))
  result$fedmix <- list(theta = fedmix_point[1:3], beta = fedmix_point[4:5])
  result$lme4_deviance <- list(at_fedmix = dev_fedmix, at_fedmix_again = dev_fedmix_again, at_glmer = dev_glmer,
                               glmer_minus_fedmix = dev_glmer - dev_fedmix)
  result$gradient_at_fedmix <- list(step = h, value = grad)
  result$episode_sd_profile <- list(episode_sd = episode_sd, deviance = along)
  # The same function at lme4's default PIRLS tolerance (1e-7), as glmer's own
  # fit evaluates it: how much of glmer's reported -2 log L is PIRLS stopping early.
  environment(dev)$tolPwrss <- 1e-7; environment(dev)$maxit <- 100L
  loose <- c(at_fedmix = at(fedmix_point), at_glmer = if (is.null(g)) NA else at(c(unname(g$theta), unname(g$beta))))
  environment(dev)$tolPwrss <- 1e-13; environment(dev)$maxit <- 1000L
  message(sprintf("at lme4's default tolPwrss 1e-7: %.6f at fedmix's point, %.6f at glmer's", loose[[1]], loose[[2]]))
  result$lme4_deviance_default_tolPwrss <- as.list(loose)
  result$glmmTMB_objective <- list(at_fedmix = tmb_fedmix, at_glmer = tmb_glmer)
  result$bobyqa_from_fedmix <- list(deviance = polish$fval, par = polish$par, evaluations = polish$feval)
}
writeLines(toJSON(result, digits = NA, auto_unbox = TRUE, pretty = TRUE), out_json)
