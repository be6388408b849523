test_that("sleepstudy REML agrees with lme4", {
  skip_without_fedmix()
  ref <- reference("sleepstudy", "reml")
  fit <- fedmix_fit(Reaction ~ Days + (Days | Subject), paths = case_sites("sleepstudy"),
                    fedmix = fedmix_binary())
  expect_s3_class(fit, "fedmix_fit")

  expect_named(fixef(fit), c("(Intercept)", "Days"))
  expect_lt(rel_err(fixef(fit), ref_fixef(ref)), 1e-5)
  expect_lt(rel_err(sqrt(diag(vcov(fit))), ref_se(ref)), 1e-5)
  expect_lt(rel_err(as.numeric(logLik(fit)), ref$loglik), 1e-5)
  expect_equal(attr(logLik(fit), "df"), 6)
  expect_equal(attr(logLik(fit), "nobs"), 180L)
  expect_equal(nobs(fit), ref$n_obs)
  expect_lt(rel_err(AIC(fit), ref$aic), 1e-5)
  expect_lt(rel_err(BIC(fit), ref$bic), 1e-5)
  expect_equal(AIC(fit), fit$json$aic, tolerance = 1e-12)
  expect_equal(BIC(fit), fit$json$bic, tolerance = 1e-12)
  expect_lt(rel_err(sigma(fit), ref$sigma), 1e-5)

  # VarCorr: lme4's as.data.frame(VarCorr()) rows; its default-tolerance fit
  # is 1.7e-5 off in the variances (the likelihood is flat there: fedmix's
  # criterion is as low), so 1e-4 against it, 1e-5 against lme4 at tight tolerances
  vc <- as.data.frame(VarCorr(fit))
  rv <- ref_varcorr(ref)
  expect_equal(vc[, c("grp", "var1", "var2")], rv[, c("grp", "var1", "var2")])
  expect_lt(rel_err(vc$vcov, rv$vcov), 1e-4)
  expect_lt(rel_err(vc$sdcor, rv$sdcor), 1e-4)
  t <- tight("reference-tight.json", "sleepstudy/reml")
  expect_lt(rel_err(vc$vcov, unlist(t$vcov)), 1e-5)
  expect_lt(rel_err(vc$sdcor, unlist(t$sdcor)), 1e-5)
  expect_lt(rel_err(fixef(fit), unlist(t$estimates)), 1e-5)

  # vcov: p x p in fixed-effect order, symmetric, diagonal = SE^2
  v <- vcov(fit)
  expect_equal(dim(v), c(2L, 2L))
  expect_equal(dimnames(v), list(names(fixef(fit)), names(fixef(fit))))
  expect_equal(v, t(v))
  expect_equal(sqrt(diag(v)), stats::setNames(vapply(fit$json$fixed_effects, function(e) e$std_error, 0), names(fixef(fit))),
               tolerance = 1e-12)

  # Wald intervals = fedmix's own ci_lower/ci_upper
  ci <- confint(fit)
  expect_equal(colnames(ci), c("2.5 %", "97.5 %"))
  expect_equal(unname(ci[, 1]), vapply(fit$json$fixed_effects, function(e) e$ci_lower, 0), tolerance = 1e-12)
  expect_equal(unname(ci[, 2]), vapply(fit$json$fixed_effects, function(e) e$ci_upper, 0), tolerance = 1e-12)
  expect_equal(rownames(confint(fit, "Days", level = 0.9)), "Days")

  # per-site coefficients: no site-level effect here, so each is fixef
  cf <- coef(fit)
  expect_named(cf, "site")
  expect_equal(sort(rownames(cf$site)), c("central", "north", "south"))
  for (s in rownames(cf$site)) expect_equal(unlist(cf$site[s, ]), fixef(fit))
  expect_length(ranef(fit), 0L)
  expect_output(print(ranef(fit)), "within-site groups \\(Subject\\)")
  expect_equal(nrow(as.data.frame(ranef(fit))), 0L)

  # tidy / glance shapes
  td <- tidy(fit)
  expect_s3_class(td, "data.frame")
  expect_equal(names(td), c("effect", "group", "term", "estimate", "std.error", "statistic", "p.value"))
  expect_equal(td$effect, c("fixed", "fixed", "ran_pars", "ran_pars", "ran_pars", "ran_pars"))
  expect_equal(td$term, c("(Intercept)", "Days", "sd__(Intercept)", "sd__Days",
                          "cor__(Intercept).Days", "sd__Observation"))
  expect_equal(td$group[3:6], c("Subject", "Subject", "Subject", "Residual"))
  expect_equal(td$estimate[3:6], vc$sdcor)
  expect_equal(nrow(tidy(fit, effects = "fixed")), 2L)
  expect_equal(tidy(fit, effects = "ran_pars", scales = "vcov")$estimate, vc$vcov)
  tc <- tidy(fit, conf.int = TRUE)
  expect_equal(tc$conf.low[1:2], unname(ci[, 1]))
  gl <- glance(fit)
  expect_equal(dim(gl), c(1L, 11L))
  expect_equal(names(gl), c("nobs", "n_sites", "sigma", "logLik", "AIC", "BIC", "deviance",
                            "REMLcrit", "df.residual", "converged", "singular"))
  expect_equal(gl$nobs, 180L)
  expect_equal(gl$n_sites, 3L)
  expect_equal(gl$df.residual, 174L)
  expect_true(is.na(gl$deviance))
  expect_lt(rel_err(gl$REMLcrit, ref$objective), 1e-6)

  expect_output(print(fit), "Linear mixed model fit by REML \\[fedmix, 3 sites\\]")
  s <- summary(fit)
  expect_s3_class(s, "summary.fedmix_fit")
  expect_equal(colnames(coef(s)), c("Estimate", "Std. Error", "t value"))
  out <- capture.output(print(s))
  expect_true(any(grepl("Correlation of Fixed Effects", out)))
  expect_true(any(grepl("Subject  \\(Intercept\\) 612\\.09", out)))
  expect_true(any(grepl("^Days +10\\.467 +1\\.546 +6\\.771", out)))
  expect_output(print(VarCorr(fit)), "Corr")
  expect_equal(formula(fit), Reaction ~ Days + (Days | Subject), ignore_attr = TRUE)
  expect_error(deviance(fit), "REML")
})

test_that("sleepstudy ML agrees with lme4", {
  skip_without_fedmix()
  ref <- reference("sleepstudy", "ml")
  fit <- fedmix_fit("Reaction ~ Days + (Days | Subject)", paths = case_sites("sleepstudy"),
                    REML = FALSE, fedmix = fedmix_binary())
  expect_equal(fit$json$model$method, "ML")
  expect_lt(rel_err(fixef(fit), ref_fixef(ref)), 1e-5)
  expect_lt(rel_err(as.numeric(logLik(fit)), ref$loglik), 1e-5)
  expect_lt(rel_err(deviance(fit), ref$objective), 1e-6)
  expect_lt(rel_err(as.data.frame(VarCorr(fit))$sdcor, ref_varcorr(ref)$sdcor), 1e-4)
  expect_true(is.na(glance(fit)$REMLcrit))
  expect_output(print(fit), "maximum likelihood")
})
