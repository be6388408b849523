# References for the formula functions scale, poly, ns, log1p, abs, pmin, pmax,
# I(comparison), cut, relevel and as.factor (Tests/IntegrationTests/
# FormulaFunctionTests.swift): R's model.matrix on the pooled rows (every
# 7th row, all columns) and lmer's REML fit at tight optimizer tolerances.
# Run from the repository root: Rscript Tests/Fixtures/tools/formula-functions.R
# Writes Tests/Fixtures/formula-functions.json. Needs R and lme4 (not the tests).
suppressMessages(library(lme4))
library(splines)
num <- function(x) sprintf("%.17g", x)
vec <- function(x) paste0("[", paste(num(x), collapse = ", "), "]")
str <- function(x) paste0("[", paste0("\"", gsub("\"", "\\\\\"", x), "\"", collapse = ", "), "]")
d <- read.csv("Tests/Fixtures/reference/exam/pooled.csv", colClasses = c(site = "character"))
formulas <- c(
  scale = "normexam ~ scale(standLRT) + sex + (1 | site)",
  poly = "normexam ~ poly(standLRT, 3) + sex + (1 | site)",
  smooth = "normexam ~ abs(standLRT) + pmin(standLRT, 1) + pmax(standLRT, -1) + log1p(schavg) + (1 | site)",
  comparison = "normexam ~ I(standLRT > 0) + sex + (1 | site)",
  comparison_and = "normexam ~ I(standLRT > -1 & standLRT <= 1) * sex + (1 | site)",
  cut = "normexam ~ cut(standLRT, c(-Inf, -1, 0, 1, Inf)) + (1 | site)",
  relevel = "normexam ~ relevel(factor(schgend), ref = \"girls\") + as.factor(sex) + (1 | site)",
  spline = "normexam ~ ns(standLRT, knots = c(-1, 0, 1), Boundary.knots = c(-2, 2)) + sex + (1 | site)"
)
rows <- seq(1, nrow(d), by = 7)
out <- c()
for (key in names(formulas)) {
  f <- as.formula(formulas[[key]])
  m <- lmer(f, d, REML = TRUE,
            control = lmerControl(optimizer = "nloptwrap",
              optCtrl = list(xtol_abs = 1e-14, ftol_abs = 1e-15, ftol_rel = 1e-16, xtol_rel = 1e-14, maxeval = 100000)))
  X <- getME(m, "X")
  s <- summary(m)$coefficients
  cols <- paste0("[", paste(apply(X[rows, , drop = FALSE], 2, vec), collapse = ", "), "]")
  out <- c(out, sprintf("\"%s\": {\"formula\": \"%s\", \"names\": %s, \"columns\": %s, \"objective\": %s, \"theta\": %s, \"estimates\": %s, \"std_errors\": %s, \"sigma\": %s, \"n_obs\": %d}",
    key, gsub("\"", "\\\\\"", formulas[[key]]), str(colnames(X)), cols, num(REMLcrit(m)), vec(getME(m, "theta")),
    vec(s[, 1]), vec(s[, 2]), num(sigma(m)), nobs(m)))
}
writeLines(c("{", paste0("\"rows\": ", paste0("[", paste(rows, collapse = ", "), "]"), ","), paste(out, collapse = ",\n"), "}"),
           "Tests/Fixtures/formula-functions.json")
