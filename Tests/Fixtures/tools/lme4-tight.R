# Refits the LMM reference cases with lme4 at tight optimizer tolerances, to
# tell lme4's default stopping error apart from fedmix's. Run from the
# repository root: Rscript Tests/Fixtures/tools/lme4-tight.R
# Writes Tests/Fixtures/reference-tight.json. Needs R and lme4 (not the tests).
suppressMessages(library(lme4))
cases <- list(
  list("dyestuff", "reml", "Yield ~ 1 + (1 | site)", TRUE),
  list("dyestuff", "ml", "Yield ~ 1 + (1 | site)", FALSE),
  list("sleepstudy", "reml", "Reaction ~ Days + (Days | Subject)", TRUE),
  list("sleepstudy", "ml", "Reaction ~ Days + (Days | Subject)", FALSE),
  list("sleepstudy", "reml_uncorrelated", "Reaction ~ Days + ((1 | Subject) + (0 + Days | Subject))", TRUE),
  list("pastes", "reml", "strength ~ 1 + (1 | site) + (1 | site:cask)", TRUE),
  list("pastes", "ml", "strength ~ 1 + (1 | site) + (1 | site:cask)", FALSE),
  list("exam", "reml", "normexam ~ standLRT + sex + (standLRT | site)", TRUE),
  list("exam", "ml", "normexam ~ standLRT + sex + (standLRT | site)", FALSE))
num <- function(x) sprintf("%.17g", x)
vec <- function(x) paste0("[", paste(num(x), collapse = ", "), "]")
out <- c()
for (c in cases) {
  d <- read.csv(file.path("Tests/Fixtures/reference", c[[1]], "pooled.csv"), colClasses = c(site = "character"))
  m <- lmer(as.formula(c[[3]]), d, REML = c[[4]],
            control = lmerControl(optimizer = "nloptwrap",
              optCtrl = list(xtol_abs = 1e-14, ftol_abs = 1e-15, ftol_rel = 1e-16, xtol_rel = 1e-14, maxeval = 100000)))
  vc <- as.data.frame(VarCorr(m))
  s <- summary(m)$coefficients
  site <- ""
  if ("site" %in% names(ranef(m))) {
    re <- ranef(m, condVar = TRUE)$site
    pv <- attr(re, "postVar")
    rows <- sapply(seq_len(nrow(re)), function(i)
      sprintf("{\"site\": \"%s\", \"effects\": %s, \"cond_sd\": %s}", rownames(re)[i],
              vec(as.numeric(re[i, ])), vec(sqrt(diag(as.matrix(pv[, , i]))))))
    site <- paste0(", \"site_effects\": [", paste(rows, collapse = ", "), "]")
  }
  out <- c(out, sprintf("\"%s/%s\": {\"objective\": %s, \"theta\": %s, \"estimates\": %s, \"std_errors\": %s, \"vcov\": %s, \"sdcor\": %s, \"sigma\": %s%s}",
    c[[1]], c[[2]], num(if (c[[4]]) REMLcrit(m) else deviance(m)), vec(getME(m, "theta")),
    vec(s[, 1]), vec(s[, 2]), vec(vc$vcov), vec(vc$sdcor), num(sigma(m)), site))
}
writeLines(c("{", paste(out, collapse = ",\n"), "}"), "Tests/Fixtures/reference-tight.json")
