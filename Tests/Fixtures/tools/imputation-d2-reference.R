# Reference for the D2 pooling of likelihood-ratio statistics
# (PooledLikelihoodRatio; Tests/IntegrationTests/MultipleImputationTests.swift):
# mitml's D2 (its internal .D2, Li et al. 1991) on fixed statistics, with
# the p-value testModels reports (pf upper tail).
# Run from the repository root: Rscript Tests/Fixtures/tools/imputation-d2-reference.R
# Writes Tests/Fixtures/imputation/d2.json. Needs R with jsonlite and mitml.
suppressMessages(library(jsonlite))
d2 <- function(d, k) {
  x <- mitml:::.D2(d, k)
  list(d = d, k = k, statistic = x$F, df2 = x$v, p = pf(x$F, k, x$v, lower.tail = FALSE))
}
cases <- list(d2(c(4.1, 5.3, 3.8, 6.0, 4.9), 1), d2(c(12.5, 9.8, 14.1, 11.0, 10.2, 13.3, 12.0, 9.1, 15.0, 11.7), 3),
              d2(c(0.8, 2.1, 1.4), 2))
writeLines(toJSON(list(cases = cases, mitml = as.character(packageVersion("mitml"))), digits = NA, auto_unbox = TRUE, pretty = TRUE),
           "Tests/Fixtures/imputation/d2.json")
