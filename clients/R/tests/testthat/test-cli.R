test_that("formulas, families and options become fedmix's command line", {
  f <- fedmix:::formula_text
  expect_equal(f(y ~ x + (1 | site)), "y ~ x + (1 | site)")
  expect_equal(f("y ~   x +\n (1|site)"), "y ~ x + (1|site)")
  long <- y ~ a_long_variable_name + another_long_variable_name + yet_another_long_variable_name +
    and_one_more_long_variable_name + (1 + a_long_variable_name | site)
  expect_false(grepl("\n", f(long)))
  expect_error(f(1), "formula")

  expect_equal(fedmix:::family_spec("gaussian", NULL), list(family = "gaussian", link = NULL))
  expect_equal(fedmix:::family_spec(binomial, NULL), list(family = "binomial", link = NULL))
  expect_equal(fedmix:::family_spec(binomial("probit"), NULL), list(family = "binomial", link = "probit"))
  expect_equal(fedmix:::family_spec("poisson", NULL), list(family = "poisson", link = NULL))

  m <- fedmix:::model_args
  fam <- fedmix:::family_spec
  expect_equal(m(fam("gaussian", NULL), TRUE, 1, NULL, NULL), character())
  expect_equal(m(fam("gaussian", NULL), FALSE, 1, ~ w, "age >= 50"),
               c("--ml", "--weights", "w", "--filter", "age >= 50"))
  expect_equal(m(fam("binomial", "cloglog"), TRUE, 9, "size", NULL),
               c("--family", "binomial", "--link", "cloglog", "--nagq", "9", "--weights", "size"))

  s <- fedmix:::source_args
  expect_equal(s(NULL, NULL, c("a.csv", "dir")), list(command = "local", args = c("a.csv", "dir")))
  expect_equal(s("sites.json", "registry", NULL),
               list(command = "fit", args = c("--sites", "sites.json", "--dataset", "registry")))
  expect_error(s("sites.json", "registry", "a.csv"), "not both")
  expect_error(s("sites.json", NULL, NULL), "dataset")

  e <- fedmix:::extra_options
  expect_equal(e(list(in_process = TRUE, quiet = FALSE, exclude_sites = "a,b", "--x", "y")),
               c("--in-process", "--exclude-sites", "a,b", "--x", "y"))
})

test_that("a missing executable is a clear error", {
  expect_error(fedmix_fit(y ~ x + (1 | site), paths = "a.csv", fedmix = "/nonexistent/fedmix"),
               "does not exist")
  expect_error(fedmix_fit(y ~ x + (1 | site), paths = "a.csv", fedmix = "no-such-fedmix-command"),
               "not on the PATH")
})

test_that("fedmix's errors are R errors with its message", {
  skip_without_fedmix()
  err <- tryCatch(fedmix_fit(nonesuch ~ Days + (1 | Subject), paths = case_sites("sleepstudy"),
                             fedmix = fedmix_binary()), error = identity)
  expect_s3_class(err, "fedmix_error")
  expect_match(conditionMessage(err), "unknown variable \"nonesuch\"")
  expect_false(identical(err$status, 0L))
})

test_that("a fit read back from fedmix's JSON file has the same accessors", {
  skip_without_fedmix()
  out <- tempfile(fileext = ".json")
  status <- system2(fedmix_binary(), shQuote(c("local", case_sites("sleepstudy"), "--formula",
                                               "Reaction ~ Days + (Days | Subject)", "--format", "json",
                                               "--output", out)))
  expect_equal(status, 0L)
  fit <- read_fedmix_json(out)
  expect_equal(names(fixef(fit)), c("(Intercept)", "Days"))
  expect_equal(nrow(tidy(fit)), 6L)
  expect_error(confint(fit, method = "profile"), "read from a file")
  expect_error(anova(fit, fit), "made by fedmix_fit")
})

test_that("anova() runs fedmix compare (skipped while fedmix has no compare)", {
  skip_without_fedmix()
  exe <- fedmix_binary()
  if (system2(exe, c("compare", "--help"), stdout = FALSE, stderr = FALSE) != 0L)
    skip("this fedmix has no 'compare' command (fedmix compare --help fails)")
  dir <- case_sites("sleepstudy")
  f0 <- fedmix_fit(Reaction ~ Days + (1 | Subject), paths = dir, fedmix = exe)
  f1 <- fedmix_fit(Reaction ~ Days + (Days | Subject), paths = dir, fedmix = exe)
  a <- anova(f0, f1)
  expect_s3_class(a, "anova")
  expect_equal(rownames(a), c("f0", "f1"))
  expect_equal(a$npar, c(4, 6))
  expect_equal(a$Df[2], 2)
  expect_gt(a$Chisq[2], 0)
  expect_true(a[["Pr(>Chisq)"]][2] < 1e-6)
})

test_that("anova() against the compare interface (a stand-in fedmix)", {
  skip_without_fedmix()
  dir <- case_sites("sleepstudy")
  plain <- mock_fedmix()
  f0 <- fedmix_fit(Reaction ~ Days + (1 | Subject), paths = dir, fedmix = plain$path)
  f1 <- fedmix_fit(Reaction ~ Days + (Days | Subject), paths = dir, fedmix = plain$path)
  # no compare command: a clear error
  no_compare <- tempfile()
  writeLines(c("#!/bin/sh", "echo 'fedmix: unknown command \"compare\"' >&2", "exit 64"), no_compare)
  Sys.chmod(no_compare, "0755")
  g0 <- f0; g0$fedmix <- no_compare
  expect_error(anova(g0, f1), "no 'compare' command")
  expect_error(anova(f0), "two or more")
  other <- fedmix_fit(Reaction ~ Days + (1 | Subject), paths = dir, REML = FALSE,
                      filter = "Days >= 1", fedmix = plain$path)
  expect_error(anova(f0, other), "same data")

  canned <- tempfile(fileext = ".json")
  writeLines(jsonlite::toJSON(list(
    models = list(list(model = list(formula = f0$spec$formula)), list(model = list(formula = f1$spec$formula))),
    anova = list(
      list(model = f0$spec$formula, npar = 4, aic = 1802.079, bic = 1814.850, loglik = -897.0393,
           deviance = 1794.079, chisq = NULL, df = NULL, p_value = NULL, p_value_mixture = NULL),
      list(model = f1$spec$formula, npar = 6, aic = 1763.939, bic = 1783.097, loglik = -875.9697,
           deviance = 1751.939, chisq = 42.1393, df = 2, p_value = 7.07e-10, p_value_mixture = 3.2e-10))),
    auto_unbox = TRUE, null = "null", digits = NA), canned)
  mock <- mock_fedmix(compare_json = canned)
  f0$fedmix <- mock$path
  a <- anova(f0, f1)
  args <- mock$args()
  expect_equal(args[1], "compare")
  expect_true(dir %in% args)
  expect_equal(args[which(args == "--formula") + 1L], c(f0$spec$formula, f1$spec$formula))
  expect_equal(args[length(args) - 1:0], c("--format", "json"))
  expect_false("--ml" %in% args)
  expect_s3_class(a, "anova")
  expect_equal(rownames(a), c("f0", "f1"))
  expect_equal(names(a), c("npar", "AIC", "BIC", "logLik", "deviance", "Chisq", "Df",
                           "Pr(>Chisq)", "Pr(mixture)"))
  expect_true(is.na(a$Chisq[1]))
  expect_equal(a$Chisq[2], 42.1393)
  expect_output(print(a), "f1: Reaction ~ Days \\+ \\(Days \\| Subject\\)")
})

test_that("profile intervals come from fedmix --confint profile", {
  skip_without_fedmix()
  dir <- case_sites("sleepstudy")
  fit <- fedmix_fit(Reaction ~ Days + (Days | Subject), paths = dir, fedmix = fedmix_binary())
  if (!fedmix:::has_option(fedmix_binary(), "local", "--confint")) {
    expect_error(confint(fit, method = "profile"), "no --confint option")
  } else {
    ci <- confint(fit, method = "profile")
    expect_true(all(c("(Intercept)", "Days") %in% rownames(ci)))
    expect_true(all(ci[, 1] < ci[, 2]))
  }
  # the interface, through a stand-in fedmix
  json <- fit$json
  json$confint <- list(
    list(parameter = ".sig01", lower = 14.38, upper = 37.72, method = "profile"),
    list(parameter = "(Intercept)", lower = 237.68, upper = 265.13, method = "profile"),
    list(parameter = "Days", lower = 7.36, upper = 13.58, method = "profile"))
  canned <- tempfile(fileext = ".json")
  writeLines(jsonlite::toJSON(json, auto_unbox = TRUE, null = "null", digits = NA), canned)
  mock <- mock_fedmix(confint_json = canned)
  fit$fedmix <- mock$path
  ci <- confint(fit, method = "profile")
  expect_equal(rownames(ci), c(".sig01", "(Intercept)", "Days"))
  expect_equal(unname(ci["Days", ]), c(7.36, 13.58))
  args <- mock$args()
  expect_equal(args[which(args == "--confint") + 1L], "profile")
  expect_equal(args[1], "local")
  expect_error(confint(fit, method = "profile", level = 0.9), "95%")
  td <- tidy(fit, conf.int = TRUE, conf.method = "profile")
  expect_equal(td$conf.low[td$term == "Days"], 7.36)
})
