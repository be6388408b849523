# References for GLMMs with grouping factors crossed with the sites (issue 17;
# Tests/IntegrationTests/CrossedGLMMTests.swift): the data, one CSV per site
# under Tests/Fixtures/crossed-glmm/surgeons/, and glmer's Laplace fit
# (nAGQ = 1) on the pooled rows refitted tightly (bobyqa, rhoend 1e-12,
# tolPwrss 1e-13; and nloptwrap, taking the lower deviance) in Tests/Fixtures/crossed-glmm/references.json.
#   surgeons: simulated (seed 1717): 20 hospitals, 40 surgeons who operate
#             at 2-4 hospitals each; died (binomial) and complications
#             (Poisson counts) with age; and the surgeons alone, with no
#             random effect of a site's own (died_surgeon_only); and
#             readmitted with year crossed too and a surgeon slope in age.
# Run from the repository root: Rscript Tests/Fixtures/tools/crossed-glmm-references.R
# SEs are vcov(m): lme4's finite-difference Hessian of the deviance in
# (θ, β) at the optimum. Needs R, lme4 and jsonlite (not the tests).
suppressMessages({ library(lme4); library(jsonlite) })
out_dir <- "Tests/Fixtures/crossed-glmm"

set.seed(1717)
hospitals <- sprintf("H%02d", 1:20)
surgeons <- sprintf("S%02d", 1:40)
# Each surgeon operates at 2-4 hospitals; every hospital gets at least 2 surgeons.
at <- lapply(surgeons, function(s) sample(hospitals, sample(2:4, 1)))
names(at) <- surgeons
for (h in hospitals) if (sum(sapply(at, function(a) h %in% a)) < 2) at[[sample(surgeons, 1)]] <- c(at[[1]], h)
u_site <- rnorm(20, 0, 0.5); names(u_site) <- hospitals
u_surg <- rnorm(40, 0, 0.4); names(u_surg) <- surgeons
rows <- list()
for (s in surgeons) for (h in unique(at[[s]])) {
  n <- 12 + sample(0:18, 1)
  rows[[length(rows) + 1]] <- data.frame(site = h, surgeon = s, k = seq_len(n))
}
reg <- do.call(rbind, rows)
reg$k <- NULL
reg$age <- round(rnorm(nrow(reg), 0, 1), 3)
eta <- -1.3 + 0.5 * reg$age + u_site[reg$site] + u_surg[reg$surgeon]
reg$died <- rbinom(nrow(reg), 1, plogis(eta))
reg$complications <- rpois(nrow(reg), exp(-0.3 + 0.25 * reg$age + 0.8 * u_site[reg$site] + u_surg[reg$surgeon]))
reg <- reg[order(reg$site, reg$surgeon), ]
rownames(reg) <- NULL
tab <- table(reg$site, reg$surgeon)
stopifnot(min(tab[tab > 0]) >= 12, all(rowSums(tab > 0) >= 2), all(colSums(tab > 0) >= 2))
# The agents' default rules: each outcome class with at least 5 rows per hospital.
deaths <- table(factor(reg$site, levels = hospitals), reg$died)
stopifnot(min(deaths) >= 5)
# Several crossed factors and a vector crossed term: the year of the
# operation (2016-2020, crossed with the sites too) and readmission, drawn
# after everything above (so the columns above are unchanged), with a year
# effect and a surgeon-specific slope in age.
reg$year <- sample(2016:2020, nrow(reg), replace = TRUE)
u_year <- rnorm(5, 0, 0.5); names(u_year) <- 2016:2020
s_surg <- rnorm(40, 0, 0.35); names(s_surg) <- surgeons
reg$readmitted <- rbinom(nrow(reg), 1, plogis(-0.8 + 0.4 * reg$age + u_site[reg$site] + u_year[as.character(reg$year)] +
                                                u_surg[reg$surgeon] + s_surg[reg$surgeon] * reg$age))
stopifnot(min(table(reg$site, reg$year)) >= 5, min(table(factor(reg$site, levels = hospitals), reg$readmitted)) >= 5)
dir <- file.path(out_dir, "surgeons")
unlink(dir, recursive = TRUE); dir.create(dir, recursive = TRUE)
for (s in unique(reg$site)) write.csv(reg[reg$site == s, ], file.path(dir, paste0(s, ".csv")), row.names = FALSE, quote = FALSE)

tight <- glmerControl(optimizer = "bobyqa", optCtrl = list(rhoend = 1e-12, maxfun = 1e6), tolPwrss = 1e-13)
fits <- list(
  died = list(family = binomial, fedmix = "died ~ age + (1 | site) + (1 | surgeon)", r = died ~ age + (1 | site) + (1 | surgeon)),
  died_surgeon_only = list(family = binomial, fedmix = "died ~ age + (1 | surgeon)", r = died ~ age + (1 | surgeon)),
  complications = list(family = poisson, fedmix = "complications ~ age + (1 | site) + (1 | surgeon)",
                       r = complications ~ age + (1 | site) + (1 | surgeon)),
  readmitted = list(family = binomial, fedmix = "readmitted ~ age + (1 | site) + (1 | year) + (1 + age | surgeon)",
                    r = readmitted ~ age + (1 | site) + (1 | year) + (1 + age | surgeon))
)
only <- commandArgs(trailingOnly = TRUE)
if (length(only)) fits <- fits[only]
ranef_table <- function(m) {
  re <- ranef(m, condVar = TRUE)
  lapply(names(re), function(g) {
    v <- attr(re[[g]], "postVar")
    list(group = g, levels = I(rownames(re[[g]])), columns = I(colnames(re[[g]])),
         modes = unname(as.matrix(re[[g]])),
         cond_sd = do.call(rbind, lapply(seq_len(nrow(re[[g]])), function(i) sqrt(diag(as.matrix(v[, , i]))))))
  })
}
refs <- lapply(names(fits), function(k) {
  f <- fits[[k]]
  # Two tight refits (bobyqa; nloptwrap as in lme4-tight-glmm.R); the lower
  # deviance (glmer's own devfun at the estimates) is the reference.
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
  list(case = "surgeons", formula = f$fedmix, family = if (identical(f$family, binomial)) "binomial" else "poisson",
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
# Rscript … KEY… refits only those models (the data are written whole either way).
writeLines(toJSON(refs, auto_unbox = TRUE, digits = NA, pretty = TRUE, null = "null"),
           file.path(out_dir, if (length(only)) "references-partial.json" else "references.json"))
