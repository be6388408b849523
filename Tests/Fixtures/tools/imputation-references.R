# References for multiple imputation (Tests/IntegrationTests/
# MultipleImputationTests.swift), on the pooled rows of
# Tests/Fixtures/imputation/registry (written by `fedmix simulate imputation`,
# seed 16: 8 hospitals, lactate missing at random by hospital, severity and death).
#  - imputation_model: lmer(lactate ~ age + iss + died + (1 | site), REML) on the
#    rows where lactate is observed, at tight tolerances (the imputation model's fit).
#  - mice: mice's two-level method 2l.lmer (Jolani 2018), M = 100, the same
#    imputation model (site as the cluster, age, iss, died as predictors); the
#    analysis glmer(died ~ age + iss + lactate + (1 | site), binomial) on each
#    completed dataset, pooled by mice::pool.scalar with dfcom = n - p.
#  - own: this script's implementation of fedmix's draws (README "Multiple
#    imputation": σ² scaled inverse-χ², log θ normal with covariance 2 H⁻¹ of
#    the REML criterion, β normal, each site's random effect from its
#    conditional given the draw and its observed rows), M = 100, same analysis
#    and pooling. fedmix's draws and these differ only by Monte Carlo error.
#  - rubin: mice::pool.scalar on fixed inputs (Rubin's rules and Barnard-Rubin df).
# Run from the repository root: Rscript Tests/Fixtures/tools/imputation-references.R
# Writes Tests/Fixtures/imputation/references.json. Needs R with lme4, mice, jsonlite (not the tests).
suppressMessages({ library(lme4); library(mice); library(jsonlite) })
files <- sort(list.files("Tests/Fixtures/imputation/registry", pattern = "\\.csv$", full.names = TRUE))
d <- do.call(rbind, lapply(files, function(f) read.csv(f, colClasses = c(site = "character"), na.strings = "NA")))
tight <- lmerControl(optimizer = "nloptwrap",
                     optCtrl = list(xtol_abs = 1e-14, ftol_abs = 1e-15, ftol_rel = 1e-16, xtol_rel = 1e-14, maxeval = 100000))
obs <- d[!is.na(d$lactate), ]
im <- lmer(lactate ~ age + iss + died + (1 | site), obs, REML = TRUE, control = tight)
imputation_model <- list(
  n_obs = nrow(obs), estimate = unname(fixef(im)), std_error = unname(sqrt(diag(as.matrix(vcov(im))))),
  names = names(fixef(im)), theta = I(unname(getME(im, "theta"))), sigma = sigma(im), objective = unname(REMLcrit(im)))

# mice 2l.lmer: the cluster as an integer, the analysis variables only.
set.seed(20261130)
md <- data.frame(site = as.integer(factor(d$site)), age = d$age, iss = d$iss, died = d$died, lactate = d$lactate)
pred <- make.predictorMatrix(md)
pred[,] <- 0
pred["lactate", c("age", "iss", "died")] <- 1
pred["lactate", "site"] <- -2
meth <- make.method(md); meth[] <- ""; meth["lactate"] <- "2l.lmer"
M <- 100
imp <- mice(md, m = M, maxit = 1, method = meth, predictorMatrix = pred, printFlag = FALSE)
fits <- lapply(seq_len(M), function(i) {
  cd <- complete(imp, i); cd$site <- factor(cd$site)
  glmer(died ~ age + iss + lactate + (1 | site), cd, family = binomial)
})
p <- length(fixef(fits[[1]])); n <- nrow(md)
Q <- sapply(fits, fixef); U <- sapply(fits, function(f) diag(as.matrix(vcov(f))))
pooled <- lapply(seq_len(p), function(j) pool.scalar(Q[j, ], U[j, ], n = n, k = p))
mice_ref <- list(m = M, names = names(fixef(fits[[1]])), n_obs = n,
  estimate = sapply(pooled, function(x) x$qbar), std_error = sapply(pooled, function(x) sqrt(x$t)),
  between = sapply(pooled, function(x) x$b), within = sapply(pooled, function(x) x$ubar),
  df = sapply(pooled, function(x) x$df), fmi = sapply(pooled, function(x) x$fmi))

# The same draws as fedmix, written out in R.
pool_fits <- function(fits, n) {
  p <- length(fixef(fits[[1]]))
  Q <- sapply(fits, fixef); U <- sapply(fits, function(f) diag(as.matrix(vcov(f))))
  pooled <- lapply(seq_len(p), function(j) pool.scalar(Q[j, ], U[j, ], n = n, k = p))
  list(m = length(fits), names = names(fixef(fits[[1]])), n_obs = n,
       estimate = sapply(pooled, function(x) x$qbar), std_error = sapply(pooled, function(x) sqrt(x$t)),
       between = sapply(pooled, function(x) x$b), within = sapply(pooled, function(x) x$ubar),
       df = sapply(pooled, function(x) x$df), fmi = sapply(pooled, function(x) x$fmi))
}
set.seed(20261201)
dev <- lmer(lactate ~ age + iss + died + (1 | site), obs, REML = TRUE, devFunOnly = TRUE)
th <- getME(im, "theta"); h <- 1e-4 * th
hess <- (dev(th + h) - 2 * dev(th) + dev(th - h)) / h^2
var_log_theta <- 2 / hess / th^2
X <- model.matrix(~ age + iss + died, d)
bhat <- fixef(im); V <- as.matrix(vcov(im)); shat <- sigma(im); dfres <- nrow(obs) - length(bhat)
own_fits <- lapply(seq_len(M), function(i) {
  s2 <- shat^2 * dfres / rchisq(1, dfres)
  theta <- exp(log(th) + sqrt(var_log_theta) * rnorm(1))
  beta <- bhat + t(chol(V * s2 / shat^2)) %*% rnorm(length(bhat))
  cd <- d
  for (s in unique(d$site)) {
    o <- which(d$site == s & !is.na(d$lactate)); mis <- which(d$site == s & is.na(d$lactate))
    r <- d$lactate[o] - X[o, ] %*% beta
    A <- theta^2 * length(o) + 1
    u <- theta * sum(r) / A + sqrt(s2 / A) * rnorm(1)
    cd$lactate[mis] <- X[mis, ] %*% beta + theta * u + sqrt(s2) * rnorm(length(mis))
  }
  glmer(died ~ age + iss + lactate + (1 | site), cd, family = binomial)
})
own <- pool_fits(own_fits, nrow(d))
own$var_log_theta <- var_log_theta

# Rubin's rules on fixed inputs.
rubin_cases <- list(
  list(q = c(1.2, 1.5, 0.9, 1.1, 1.4), u = c(0.04, 0.05, 0.045, 0.038, 0.052), n = 120, k = 4),
  list(q = c(-0.31, -0.29, -0.35, -0.30, -0.33, -0.28, -0.32, -0.34, -0.27, -0.36), u = rep(0.0009, 10), n = 1000, k = 5),
  list(q = c(2, 2.5), u = c(1, 1.2), n = 30, k = 3))
rubin <- lapply(rubin_cases, function(c) {
  r <- pool.scalar(c$q, c$u, n = c$n, k = c$k)
  c(c, list(qbar = r$qbar, ubar = r$ubar, b = r$b, t = r$t, df = r$df, riv = r$r, fmi = r$fmi))
})
out <- list(imputation_model = imputation_model, mice = mice_ref, own = own, rubin = rubin,
            r_version = R.version.string, lme4 = as.character(packageVersion("lme4")), mice_version = as.character(packageVersion("mice")))
writeLines(toJSON(out, digits = NA, auto_unbox = TRUE, pretty = TRUE), "Tests/Fixtures/imputation/references.json")
cat("wrote Tests/Fixtures/imputation/references.json\n")
