# Population-averaged effects of the contraception GLMM (use01 ~ age +
# I(age^2) + urban + livch + (1 | site), Laplace), brute force on the pooled
# rows: each row's marginal mean ∫ plogis(η + σu) φ(u) du and the integrals
# its derivatives need, by R's adaptive quadrature (integrate(), Gauss-Kronrod
# with adaptive subdivision, relative tolerance 1e-12), at lme4's estimates
# fitted at tight tolerances (as lme4-tight-glmm.R). Average marginal effects:
# derivative columns βⱼ ∫ μ′; 0/1 factor columns (urbanY, livch*) the discrete
# change m(xⱼ = 1) − m(xⱼ = 0). Delta-method SEs with vcov(m) (β only; θ held
# fixed). Run from the repository root:
#   Rscript Tests/Fixtures/tools/marginal-references.R
# Writes Tests/Fixtures/marginal/contraception.json. Needs R and lme4.
suppressMessages(library(lme4))
num <- function(x) sprintf("%.17g", x)
vec <- function(x) paste0("[", paste(num(x), collapse = ", "), "]")
mat <- function(v) paste0("[", paste(sapply(seq_len(nrow(v)), function(i) vec(v[i, ])), collapse = ", "), "]")
d <- read.csv("Tests/Fixtures/reference/contraception/pooled.csv", colClasses = c(site = "character"))
f <- use01 ~ age + I(age^2) + urban + livch + (1 | site)
m <- glmer(f, d, family = binomial, nAGQ = 1,
           control = glmerControl(tolPwrss = 1e-13, optimizer = "nloptwrap",
             optCtrl = list(xtol_abs = 1e-12, ftol_abs = 1e-14, ftol_rel = 1e-15, xtol_rel = 1e-12, maxeval = 100000)))
beta <- fixef(m); sigma <- getME(m, "theta")[[1]]; V <- as.matrix(vcov(m))
X <- getME(m, "X"); p <- ncol(X); n <- nrow(X)
dmu <- function(e) { q <- plogis(e); q * (1 - q) }
d2mu <- function(e) { q <- plogis(e); q * (1 - q) * (1 - 2 * q) }
gauss <- function(g, eta) integrate(function(u) g(eta + sigma * u) * dnorm(u), -Inf, Inf, rel.tol = 1e-12, abs.tol = 0)$value
discrete <- colnames(X) %in% c("urbanY", "livch1", "livch2", "livch3+")
eta <- drop(X %*% beta)
values <- numeric(p + 1); grads <- matrix(0, p + 1, p)
for (i in seq_len(n)) {
  x <- X[i, ]
  m0 <- gauss(plogis, eta[i]); m1 <- gauss(dmu, eta[i]); m2 <- gauss(d2mu, eta[i])
  values[1] <- values[1] + m0; grads[1, ] <- grads[1, ] + x * m1
  for (j in seq_len(p)) {
    if (discrete[j]) {
      x1 <- x; x1[j] <- 1; x0 <- x; x0[j] <- 0
      e1 <- sum(x1 * beta); e0 <- sum(x0 * beta)
      values[j + 1] <- values[j + 1] + gauss(plogis, e1) - gauss(plogis, e0)
      grads[j + 1, ] <- grads[j + 1, ] + x1 * gauss(dmu, e1) - x0 * gauss(dmu, e0)
    } else {
      values[j + 1] <- values[j + 1] + beta[j] * m1
      g <- beta[j] * x * m2; g[j] <- g[j] + m1
      grads[j + 1, ] <- grads[j + 1, ] + g
    }
  }
}
values <- values / n; grads <- grads / n
se <- sqrt(rowSums((grads %*% V) * grads))
c16 <- 16 * sqrt(3) / (15 * pi)
writeLines(c("{",
  paste0("  \"formula\": \"", deparse(f), "\", \"names\": [", paste0("\"", colnames(X), "\"", collapse = ", "), "],"),
  paste0("  \"beta\": ", vec(beta), ", \"theta\": ", num(sigma), ", \"vcov\": ", mat(V), ","),
  paste0("  \"n\": ", n, ", \"discrete\": [", paste(ifelse(discrete, "true", "false"), collapse = ", "), "],"),
  paste0("  \"predicted\": ", num(values[1]), ", \"predicted_se\": ", num(se[1]), ","),
  paste0("  \"effects\": ", vec(values[-1]), ", \"effects_se\": ", vec(se[-1]), ","),
  paste0("  \"attenuated\": ", vec(beta / sqrt(1 + c16^2 * sigma^2))),
  "}"), "Tests/Fixtures/marginal/contraception.json")
