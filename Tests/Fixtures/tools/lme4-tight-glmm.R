# Refits the GLMM reference cases with lme4 at tight tolerances (PIRLS and
# optimizer), since lme4's default PIRLS tolerance (tolPwrss 1e-7) leaves its
# Laplace objective ~1e-4 above the optimum. Run from the repository root:
# Rscript Tests/Fixtures/tools/lme4-tight-glmm.R  (writes Tests/Fixtures/reference-tight-glmm.json)
suppressMessages(library(lme4))
cases <- list(
  list("cbpp", "laplace", "cbind(incidence, size - incidence) ~ factor(period) + (1 | site)", 1),
  list("cbpp", "agq9", "cbind(incidence, size - incidence) ~ factor(period) + (1 | site)", 9),
  list("contraception", "laplace", "use01 ~ age + I(age^2) + urban + livch + (1 | site)", 1),
  list("contraception", "agq7", "use01 ~ age + I(age^2) + urban + livch + (1 | site)", 7))
num <- function(x) sprintf("%.17g", x)
vec <- function(x) paste0("[", paste(num(x), collapse = ", "), "]")
out <- c()
for (c in cases) {
  d <- read.csv(file.path("Tests/Fixtures/reference", c[[1]], "pooled.csv"), colClasses = c(site = "character"))
  m <- glmer(as.formula(c[[3]]), d, family = binomial, nAGQ = c[[4]],
             control = glmerControl(tolPwrss = 1e-13, optimizer = "nloptwrap",
               optCtrl = list(xtol_abs = 1e-12, ftol_abs = 1e-14, ftol_rel = 1e-15, xtol_rel = 1e-12, maxeval = 100000)))
  s <- summary(m)$coefficients
  re <- ranef(m, condVar = TRUE)$site
  pv <- attr(re, "postVar")
  rows <- sapply(seq_len(nrow(re)), function(i)
    sprintf("{\"site\": \"%s\", \"effects\": %s, \"cond_sd\": %s}", rownames(re)[i],
            vec(as.numeric(re[i, ])), vec(sqrt(diag(as.matrix(pv[, , i]))))))
  dd <- update(m, devFunOnly = TRUE)
  out <- c(out, sprintf("\"%s/%s\": {\"objective\": %s, \"theta\": %s, \"estimates\": %s, \"std_errors\": %s, \"site_effects\": [%s]}",
    c[[1]], c[[2]], num(dd(c(getME(m, "theta"), fixef(m)))), vec(getME(m, "theta")),
    vec(s[, 1]), vec(s[, 2]), paste(rows, collapse = ", ")))
}
writeLines(c("{", paste(out, collapse = ",\n"), "}"), "Tests/Fixtures/reference-tight-glmm.json")
