# lme4's covariance of the fixed effects (vcov()) and its printed
# "Correlation of Fixed Effects" block, on the pooled rows of two reference
# cases, at lme4's default settings and at the tight tolerances of
# lme4-tight.R / lme4-tight-glmm.R. The pooled rows are the repository's
# copies of the reference cases (Tests/Fixtures/reference/<case>/pooled.csv).
# Run from the repository root:
#   Rscript Tests/Fixtures/tools/vcov-references.R
# Writes Tests/Fixtures/vcov-references.json. Needs R and lme4 (not the tests).
suppressMessages(library(lme4))
num <- function(x) sprintf("%.17g", x)
vec <- function(x) paste0("[", paste(num(x), collapse = ", "), "]")
mat <- function(v) paste0("[", paste(sapply(seq_len(nrow(v)), function(i) vec(v[i, ])), collapse = ", "), "]")
str <- function(x) paste0("\"", gsub("\n", "\\\\n", gsub("\"", "\\\\\"", x)), "\"")
# The block exactly as print(summary(m)) writes it, from its heading to its end.
block <- function(m) {
  out <- capture.output(print(summary(m)))
  start <- match("Correlation of Fixed Effects:", out)
  paste0(paste(out[start:length(out)], collapse = "\n"), "\n")
}
cases <- list(
  list("sleepstudy", "reml", "Reaction ~ Days + (Days | Subject)", "gaussian"),
  list("cbpp", "laplace", "cbind(incidence, size - incidence) ~ factor(period) + (1 | site)", "binomial"))
out <- c()
for (c in cases) {
  d <- read.csv(file.path("Tests/Fixtures/reference", c[[1]], "pooled.csv"), colClasses = c(site = "character"))
  f <- as.formula(c[[3]])
  if (c[[4]] == "gaussian") {
    m <- lmer(f, d, REML = TRUE)
    t <- lmer(f, d, REML = TRUE, control = lmerControl(optimizer = "nloptwrap",
           optCtrl = list(xtol_abs = 1e-14, ftol_abs = 1e-15, ftol_rel = 1e-16, xtol_rel = 1e-14, maxeval = 100000)))
  } else {
    m <- glmer(f, d, family = binomial, nAGQ = 1)
    t <- glmer(f, d, family = binomial, nAGQ = 1, control = glmerControl(tolPwrss = 1e-13, optimizer = "nloptwrap",
           optCtrl = list(xtol_abs = 1e-12, ftol_abs = 1e-14, ftol_rel = 1e-15, xtol_rel = 1e-12, maxeval = 100000)))
  }
  v <- as.matrix(vcov(m)); vt <- as.matrix(vcov(t))
  out <- c(out, sprintf("\"%s/%s\": {\"formula\": %s, \"names\": [%s], \"vcov\": %s, \"std_errors\": %s, \"vcov_tight\": %s, \"std_errors_tight\": %s, \"correlation_block\": %s}",
    c[[1]], c[[2]], str(c[[3]]), paste(str(colnames(v)), collapse = ", "), mat(v),
    vec(summary(m)$coefficients[, 2]), mat(vt), vec(summary(t)$coefficients[, 2]), str(block(m))))
}
writeLines(c(sprintf("{\"lme4_version\": \"%s\",", packageVersion("lme4")), paste(out, collapse = ",\n"), "}"),
           "Tests/Fixtures/vcov-references.json")
