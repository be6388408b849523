# geepack::geeglm on the pooled rows of the GEE acceptance cases, with the
# bias-corrected sandwich variances of Mancl & DeRouen (2001) and
# Kauermann & Carroll (2001) evaluated here from their published formulas at
# geeglm's estimates. Run from the repository root:
#   Rscript Tests/Fixtures/tools/gee-references.R
# Writes the site files of respiratory (center = site) and ohio (537 children
# over 10 sites by id) under Tests/Fixtures/gee/, reads the simulated trauma
# registry's site files there (fedmix simulate trauma --out DIR, seed 7), and
# writes Tests/Fixtures/gee/references.json. Needs R and geepack (not the tests).
suppressMessages(library(geepack))
num <- function(x) sprintf("%.17g", x)
vec <- function(x) paste0("[", paste(num(x), collapse = ", "), "]")
mat <- function(v) paste0("[", paste(sapply(seq_len(nrow(v)), function(i) vec(v[i, ])), collapse = ", "), "]")
root <- "Tests/Fixtures/gee"

write_sites <- function(d, site, dir) {
  dir.create(file.path(root, dir), showWarnings = FALSE, recursive = TRUE)
  for (s in unique(d[[site]])) {
    rows <- d[d[[site]] == s, setdiff(names(d), site)]
    write.csv(rows, file.path(root, dir, paste0(s, ".csv")), row.names = FALSE)
  }
}

data(respiratory)
resp <- respiratory
resp$site <- paste0("center", resp$center)
resp$center <- NULL
resp$treat <- as.character(resp$treat); resp$sex <- as.character(resp$sex)
write_sites(resp, "site", "respiratory")

data(ohio)
oh <- ohio
oh$site <- sprintf("s%d", oh$id %/% 54)
write_sites(oh, "site", "ohio")

tr <- do.call(rbind, lapply(sort(list.files(file.path(root, "trauma"), pattern = "\\.csv$", full.names = TRUE)),
                            function(f) read.csv(f, stringsAsFactors = FALSE)))

# Bias-corrected sandwiches from the published formulas, at the fit's β, α, φ.
# Per cluster i (standard notation): D_i = ∂μ_i/∂β, V_i = φ A_i^½ R_i(α) A_i^½,
# B = (Σ D_i' V_i⁻¹ D_i)⁻¹, H_ii = D_i B D_i' V_i⁻¹, r_i = y_i − μ_i.
# Mancl-DeRouen: B Σ D_i' V_i⁻¹ (I − H_ii)⁻¹ r_i r_i' (I − H_ii)⁻ᵀ V_i⁻¹ D_i B.
# Kauermann-Carroll: the same with (I − H_ii)^(-½), the principal square root,
# computed as L (I − L⁻¹ D_i B D_i' L⁻ᵀ)^(-½) L⁻¹ with V_i = L L' (H_ii is
# similar to that symmetric matrix, so this is its principal root).
corrected <- function(fit, X, y, cluster, waves, corstr) {
  beta <- coef(fit); phi <- fit$geese$gamma[[1]]; alpha <- if (corstr == "independence") 0 else fit$geese$alpha[[1]]
  fam <- family(fit)
  eta <- drop(X %*% beta); mu <- fam$linkinv(eta); me <- fam$mu.eta(eta); va <- fam$variance(mu)
  ids <- unique(cluster)
  parts <- lapply(ids, function(g) {
    k <- which(cluster == g); n <- length(k)
    R <- diag(n)
    if (n > 1 && corstr == "exchangeable") { R[] <- alpha; diag(R) <- 1 }
    if (n > 1 && corstr == "ar1") R <- alpha ^ abs(outer(waves[k], waves[k], "-"))
    S <- diag(sqrt(va[k]), n)
    V <- phi * S %*% R %*% S
    D <- me[k] * X[k, , drop = FALSE]
    list(D = D, V = V, r = y[k] - mu[k])
  })
  Binv <- Reduce(`+`, lapply(parts, function(q) t(q$D) %*% solve(q$V, q$D)))
  B <- solve(Binv)
  meat <- function(kind) Reduce(`+`, lapply(parts, function(q) {
    n <- length(q$r); Vi <- solve(q$V)
    if (kind == "plain") C <- diag(n)
    if (kind == "md") C <- solve(diag(n) - q$D %*% B %*% t(q$D) %*% Vi)
    if (kind == "kc") {
      L <- t(chol(q$V)); Li <- solve(L)
      Ht <- Li %*% q$D %*% B %*% t(q$D) %*% t(Li)
      e <- eigen(diag(n) - Ht, symmetric = TRUE)
      C <- L %*% e$vectors %*% diag(1 / sqrt(e$values), n) %*% t(e$vectors) %*% Li
    }
    u <- t(q$D) %*% Vi %*% C %*% q$r
    u %*% t(u)
  }))
  list(naive = B, plain = B %*% meat("plain") %*% B, md = B %*% meat("md") %*% B, kc = B %*% meat("kc") %*% B)
}

cases <- list(
  list(name = "respiratory-exchangeable", dir = "respiratory", data = resp, formula = outcome ~ treat + sex + age + baseline,
       family = "binomial", cluster = "id", corstr = "exchangeable", order = NULL),
  list(name = "respiratory-ar1", dir = "respiratory", data = resp, formula = outcome ~ treat + sex + age + baseline,
       family = "binomial", cluster = "id", corstr = "ar1", order = "visit"),
  list(name = "respiratory-independence-poisson", dir = "respiratory", data = resp, formula = outcome ~ treat + age + baseline,
       family = "poisson", cluster = "id", corstr = "independence", order = NULL),
  list(name = "respiratory-exchangeable-gaussian", dir = "respiratory", data = resp, formula = outcome ~ treat + sex + age + baseline + visit,
       family = "gaussian", cluster = "id", corstr = "exchangeable", order = NULL),
  list(name = "ohio-exchangeable", dir = "ohio", data = oh, formula = resp ~ age + smoke + age:smoke,
       family = "binomial", cluster = "id", corstr = "exchangeable", order = NULL),
  list(name = "trauma-exchangeable", dir = "trauma", data = tr, formula = died ~ age + iss + sex,
       family = "binomial", cluster = "site", corstr = "exchangeable", order = NULL))

out <- c()
for (c in cases) {
  d <- c$data
  # Clusters are site-local: the cluster is (site, VAR); rows contiguous by cluster.
  d$cluster_key <- if (c$cluster == "site") d$site else paste(d$site, d[[c$cluster]], sep = ":")
  d <- d[order(d$site, d$cluster_key, if (is.null(c$order)) seq_len(nrow(d)) else d[[c$order]]), ]
  d$cl <- match(d$cluster_key, unique(d$cluster_key))
  d <- d[complete.cases(d[, all.vars(c$formula)]), ]
  fam <- get(c$family)()
  fit <- if (is.null(c$order)) geeglm(c$formula, family = fam, data = d, id = cl, corstr = c$corstr)
         else geeglm(c$formula, family = fam, data = d, id = cl, corstr = c$corstr, waves = d[[c$order]])
  X <- model.matrix(c$formula, d); y <- d[[all.vars(c$formula)[1]]]
  v <- corrected(fit, X, y, d$cl, if (is.null(c$order)) NULL else d[[c$order]], c$corstr)
  stopifnot(max(abs(v$plain - fit$geese$vbeta)) < 1e-10 * max(abs(fit$geese$vbeta)),
            max(abs(v$naive - fit$geese$vbeta.naiv)) < 1e-10 * max(abs(fit$geese$vbeta.naiv)))
  alpha <- if (length(fit$geese$alpha)) fit$geese$alpha[[1]] else NULL
  out <- c(out, paste0("  \"", c$name, "\": {",
    "\"dir\": \"", c$dir, "\", \"formula\": \"", deparse(c$formula), "\", \"family\": \"", c$family,
    "\", \"cluster\": \"", c$cluster, "\", \"corstr\": \"", c$corstr, "\", \"order\": ",
    if (is.null(c$order)) "null" else paste0("\"", c$order, "\""),
    ", \"names\": [", paste0("\"", names(coef(fit)), "\"", collapse = ", "), "]",
    ", \"estimate\": ", vec(coef(fit)),
    ", \"std_error\": ", vec(sqrt(diag(fit$geese$vbeta))),
    ", \"naive_std_error\": ", vec(sqrt(diag(fit$geese$vbeta.naiv))),
    ", \"std_error_md\": ", vec(sqrt(diag(v$md))),
    ", \"std_error_kc\": ", vec(sqrt(diag(v$kc))),
    ", \"vcov\": ", mat(fit$geese$vbeta),
    ", \"alpha\": ", if (is.null(alpha)) "null" else num(alpha),
    ", \"scale\": ", num(fit$geese$gamma[[1]]),
    ", \"n_clusters\": ", length(unique(d$cl)), ", \"n_obs\": ", nrow(d), "}"))
}
writeLines(c("{", paste(out, collapse = ",\n"), "}"), file.path(root, "references.json"))
