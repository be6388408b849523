# Population-averaged effects of two contraception GLMMs (Laplace), brute
# force on the pooled rows, at lme4's estimates fitted at tight tolerances
# (as lme4-tight-glmm.R):
#   intercept: use01 ~ age + I(age^2) + urban + livch + (1 | site)
#     each row's marginal mean ∫ plogis(η + σu) φ(u) du, and the integrals its
#     derivatives need, by R's adaptive quadrature (integrate(): Gauss-Kronrod
#     with adaptive subdivision, relative tolerance 1e-12);
#   slope: use01 ~ age + I(age^2) + urban + livch + (1 + urban | site)
#     over the two-dimensional random effect b = Λu, u ~ N(0, I₂), by a
#     64 × 64 product Gauss-Hermite rule (nodes by Golub-Welsch), without
#     reducing it to one dimension.
# Average marginal effects: derivative columns βⱼ ∫ μ′; 0/1 factor columns
# (urbanY, livch*) the discrete change m(xⱼ = 1) − m(xⱼ = 0). Delta-method
# SEs with vcov(m) (β only; θ held fixed). Run from the repository root:
#   Rscript Tests/Fixtures/tools/marginal-references.R
# Writes Tests/Fixtures/marginal/contraception.json (the intercept case) and
# contraception-slope.json. Needs R and lme4.
suppressMessages(library(lme4))
num <- function(x) sprintf("%.17g", x)
vec <- function(x) paste0("[", paste(num(x), collapse = ", "), "]")
mat <- function(v) paste0("[", paste(sapply(seq_len(nrow(v)), function(i) vec(v[i, ])), collapse = ", "), "]")
d <- read.csv("Tests/Fixtures/reference/contraception/pooled.csv", colClasses = c(site = "character"))
dmu <- function(e) { q <- plogis(e); q * (1 - q) }
d2mu <- function(e) { q <- plogis(e); q * (1 - q) * (1 - 2 * q) }
hermite <- function(n) {   # nodes and weights for the standard normal weight
  J <- matrix(0, n, n); for (k in 1:(n - 1)) J[k, k + 1] <- J[k + 1, k] <- sqrt(k)
  e <- eigen(J, symmetric = TRUE)
  list(nodes = e$values, weights = e$vectors[1, ]^2)
}
gh <- hermite(64)
grid <- as.matrix(expand.grid(gh$nodes, gh$nodes)); gw <- as.vector(outer(gh$weights, gh$weights))

run <- function(f, out, slope) {
  m <- glmer(f, d, family = binomial, nAGQ = 1,
             control = glmerControl(tolPwrss = 1e-13, optimizer = "nloptwrap",
               optCtrl = list(xtol_abs = 1e-12, ftol_abs = 1e-14, ftol_rel = 1e-15, xtol_rel = 1e-12, maxeval = 100000)))
  beta <- fixef(m); theta <- getME(m, "theta"); V <- as.matrix(vcov(m))
  X <- getME(m, "X"); p <- ncol(X); n <- nrow(X)
  Lambda <- matrix(0, 2, 2); if (slope) Lambda[lower.tri(Lambda, diag = TRUE)] <- theta
  # E over the random effects of g(η + zᵢᵀb), row i
  expect <- function(g, eta, i) {
    if (!slope) return(integrate(function(u) g(eta + theta[[1]] * u) * dnorm(u), -Inf, Inf, rel.tol = 1e-12, abs.tol = 0)$value)
    z <- c(1, X[i, "urbanY"])
    sum(gw * g(eta + drop(grid %*% t(Lambda) %*% z)))
  }
  discrete <- colnames(X) %in% c("urbanY", "livch1", "livch2", "livch3+")
  eta <- drop(X %*% beta)
  values <- numeric(p + 1); grads <- matrix(0, p + 1, p)
  for (i in seq_len(n)) {
    x <- X[i, ]
    m0 <- expect(plogis, eta[i], i); m1 <- expect(dmu, eta[i], i); m2 <- expect(d2mu, eta[i], i)
    values[1] <- values[1] + m0; grads[1, ] <- grads[1, ] + x * m1
    for (j in seq_len(p)) {
      if (discrete[j]) {
        x1 <- x; x1[j] <- 1; x0 <- x; x0[j] <- 0
        e1 <- sum(x1 * beta); e0 <- sum(x0 * beta)
        # The random part keeps row i's own z (the discrete change moves x, not z).
        values[j + 1] <- values[j + 1] + expect(plogis, e1, i) - expect(plogis, e0, i)
        grads[j + 1, ] <- grads[j + 1, ] + x1 * expect(dmu, e1, i) - x0 * expect(dmu, e0, i)
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
    paste0("  \"beta\": ", vec(beta), ", \"theta\": ", vec(theta), ", \"vcov\": ", mat(V), ","),
    paste0("  \"n\": ", n, ", \"discrete\": [", paste(ifelse(discrete, "true", "false"), collapse = ", "), "],"),
    paste0("  \"predicted\": ", num(values[1]), ", \"predicted_se\": ", num(se[1]), ","),
    paste0("  \"effects\": ", vec(values[-1]), ", \"effects_se\": ", vec(se[-1]),
           if (slope) "" else paste0(",\n  \"attenuated\": ", vec(beta / sqrt(1 + c16^2 * theta[[1]]^2)))),
    "}"), out)
}
run(use01 ~ age + I(age^2) + urban + livch + (1 | site), "Tests/Fixtures/marginal/contraception.json", FALSE)
run(use01 ~ age + I(age^2) + urban + livch + (1 + urban | site), "Tests/Fixtures/marginal/contraception-slope.json", TRUE)
