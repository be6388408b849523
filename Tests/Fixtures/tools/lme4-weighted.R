# lme4's fits with prior weights, at tight optimizer tolerances, for the tests
# of `--weights` (Tests/IntegrationTests/ExecutableTests.swift). Run from the
# repository root: Rscript Tests/Fixtures/tools/lme4-weighted.R
# Writes Tests/Fixtures/reference-weighted.json. Needs R and lme4 (not the tests).
# Weighted sleepstudy: w = 1 + (Days mod 3) / 2 (1, 1.5 or 2).
suppressMessages(library(lme4))
num <- function(x) sprintf("%.17g", x)
vec <- function(x) paste0("[", paste(num(x), collapse = ", "), "]")
d <- read.csv("Tests/Fixtures/reference/sleepstudy/pooled.csv", colClasses = c(site = "character", Subject = "character"))
d$w <- 1 + (d$Days %% 3) / 2
out <- c()
for (reml in c(TRUE, FALSE)) {
  m <- lmer(Reaction ~ Days + (Days | Subject), d, weights = w, REML = reml,
            control = lmerControl(optimizer = "nloptwrap",
              optCtrl = list(xtol_abs = 1e-14, ftol_abs = 1e-15, ftol_rel = 1e-16, xtol_rel = 1e-14, maxeval = 100000)))
  s <- summary(m)$coefficients
  out <- c(out, sprintf("\"sleepstudy/weighted_%s\": {\"formula\": \"Reaction ~ Days + (Days | Subject)\", \"weights\": \"1 + (Days %% 3) / 2\", \"objective\": %s, \"theta\": %s, \"names\": [%s], \"estimates\": %s, \"std_errors\": %s, \"sigma\": %s, \"n_obs\": %d}",
    if (reml) "reml" else "ml", num(if (reml) REMLcrit(m) else deviance(m)), vec(getME(m, "theta")),
    paste0("\"", rownames(s), "\"", collapse = ", "), vec(s[, 1]), vec(s[, 2]), num(sigma(m)), nobs(m)))
}
writeLines(c("{", paste(out, collapse = ",\n"), "}"), "Tests/Fixtures/reference-weighted.json")
