# References for a crossed GLMM with within-site terms beside the crossed
# factor, fitted in the level form (issue 17; the site's own effects are its
# own and its wards'; Tests/IntegrationTests/CrossedGLMMWardsFitTests.swift):
# the data, one CSV per site under Tests/Fixtures/crossed-glmm-wards/surgeons/,
# and glmer's Laplace fit (nAGQ = 1) on the pooled rows refitted tightly
# (bobyqa, rhoend 1e-12, tolPwrss 1e-13; and nloptwrap, taking the lower
# deviance), in Tests/Fixtures/crossed-glmm-wards/references.json. The style
# of crossed-glmm-level-references.R, with wards.
#   surgeons: simulated (seed 3119): 20 hospitals, 300 surgeons who operate
#             at 2-4 hospitals each, 6-12 operations at each; 3-6 wards per
#             hospital (codes W1.. at each), each row in one at random (every
#             ward with at least 5 rows, the agents' default min_cell); died
#             (binomial) with age, the hospital's, the ward's and the
#             surgeon's effects.
# Run from the repository root: Rscript Tests/Fixtures/tools/crossed-glmm-wards-references.R
# SEs are vcov(m): lme4's finite-difference Hessian of the deviance in
# (θ, β) at the optimum. Needs R, lme4 and jsonlite (not the tests).
suppressMessages({ library(lme4); library(jsonlite) })
out_dir <- "Tests/Fixtures/crossed-glmm-wards"

set.seed(3119)
hospitals <- sprintf("H%02d", 1:20)
surgeons <- sprintf("S%03d", 1:300)
at <- lapply(surgeons, function(s) sample(hospitals, sample(2:4, 1)))
names(at) <- surgeons
u_site <- rnorm(20, 0, 0.5); names(u_site) <- hospitals
u_surg <- rnorm(300, 0, 0.4); names(u_surg) <- surgeons
rows <- list()
for (s in surgeons) for (h in at[[s]]) {
  n <- 6 + sample(0:6, 1)
  rows[[length(rows) + 1]] <- data.frame(site = h, surgeon = s, k = seq_len(n))
}
reg <- do.call(rbind, rows)
reg$k <- NULL
reg$age <- round(rnorm(nrow(reg), 0, 1), 3)
nw <- setNames(sample(3:6, 20, replace = TRUE), hospitals)
reg$ward <- paste0("W", vapply(reg$site, function(h) sample.int(nw[[h]], 1), 1L))
u_ward <- rnorm(sum(nw), 0, 0.4); names(u_ward) <- unlist(lapply(hospitals, function(h) paste(h, paste0("W", seq_len(nw[[h]])))))
reg$died <- rbinom(nrow(reg), 1, plogis(-1.3 + 0.5 * reg$age + u_site[reg$site] + u_ward[paste(reg$site, reg$ward)] + u_surg[reg$surgeon]))
reg <- reg[order(reg$site, reg$surgeon), c("site", "ward", "surgeon", "age", "died")]
rownames(reg) <- NULL
tab <- table(reg$site, reg$surgeon)
# The agents' default rules: every surgeon with at least 5 rows at a
# hospital, each outcome class with at least 5 rows per hospital.
stopifnot(min(tab[tab > 0]) >= 5, all(rowSums(tab > 0) >= 2))
stopifnot(min(table(factor(reg$site, levels = hospitals), reg$died)) >= 5)
stopifnot(min(table(paste(reg$site, reg$ward))) >= 5, length(unique(paste(reg$site, reg$ward))) == sum(nw))
dir <- file.path(out_dir, "surgeons")
unlink(dir, recursive = TRUE); dir.create(dir, recursive = TRUE)
for (s in unique(reg$site)) write.csv(reg[reg$site == s, ], file.path(dir, paste0(s, ".csv")), row.names = FALSE, quote = FALSE)

tight <- glmerControl(optimizer = "bobyqa", optCtrl = list(rhoend = 1e-12, maxfun = 1e6), tolPwrss = 1e-13)
fits <- list(died = list(family = binomial, fedmix = "died ~ age + (1 | site/ward) + (1 | surgeon)", r = died ~ age + (1 | site/ward) + (1 | surgeon)))
ranef_table <- function(m) {
  re <- ranef(m, condVar = TRUE)
  # The wards' modes stay at their sites (docs/PRIVACY.md): surgeons and sites only.
  lapply(setdiff(names(re), "ward:site"), function(g) {
    v <- attr(re[[g]], "postVar")
    list(group = g, levels = I(rownames(re[[g]])), columns = I(colnames(re[[g]])),
         modes = unname(as.matrix(re[[g]])),
         cond_sd = do.call(rbind, lapply(seq_len(nrow(re[[g]])), function(i) sqrt(diag(as.matrix(v[, , i]))))))
  })
}
refs <- lapply(names(fits), function(k) {
  f <- fits[[k]]
  m1 <- glmer(f$r, reg, family = f$family, nAGQ = 1, control = tight)
  m2 <- glmer(f$r, reg, family = f$family, nAGQ = 1,
              control = glmerControl(tolPwrss = 1e-13, optimizer = "nloptwrap",
                optCtrl = list(xtol_abs = 1e-12, ftol_abs = 1e-14, ftol_rel = 1e-15, xtol_rel = 1e-12, maxeval = 100000)))
  dev <- function(m) { dd <- update(m, devFunOnly = TRUE); dd(c(getME(m, "theta"), fixef(m))) }
  d1 <- dev(m1); d2 <- dev(m2)
  m <- if (d1 <= d2) m1 else m2
  cat(k, ": bobyqa", sprintf("%.12f", d1), " nloptwrap", sprintf("%.12f", d2), "\n")
  s <- summary(m)$coefficients
  vc <- as.data.frame(VarCorr(m))
  list(case = "surgeons", formula = f$fedmix, family = "binomial",
       objective = min(d1, d2), other_objective = max(d1, d2),
       theta = I(unname(getME(m, "theta"))),
       fixed = list(names = I(rownames(s)), estimates = I(unname(s[, 1])), std_errors = I(unname(s[, 2]))),
       loglik = as.numeric(logLik(m)), n_obs = nobs(m),
       variance_components = lapply(seq_len(nrow(vc)), function(i)
         list(group = vc$grp[i], var1 = if (is.na(vc$var1[i])) NULL else vc$var1[i],
              var2 = if (is.na(vc$var2[i])) NULL else vc$var2[i], vcov = vc$vcov[i], sdcor = vc$sdcor[i])),
       ranef = ranef_table(m))
})
names(refs) <- names(fits)
writeLines(toJSON(refs, auto_unbox = TRUE, digits = NA, pretty = TRUE, null = "null"), file.path(out_dir, "references.json"))
