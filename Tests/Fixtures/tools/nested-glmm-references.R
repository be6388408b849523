# Reference for a binomial GLMM with three nested levels, visits in
# episodes in patients in sites: `died ~ age + (1 | site/patient/episode)`.
# Simulated (set.seed(1919)): 3 sites with 300, 250 and 200 patients, 1-4
# episodes per patient, 2-5 visits per episode. glmer on the pooled rows,
# refitted at tight tolerances (bobyqa rhoend 1e-12 and nloptwrap, tolPwrss
# 1e-13; the better deviance is kept, as in crossed-glmm-wards-references.R),
# and with glmmTMB (exact-derivative Laplace). Here glmer's Laplace deviance
# stays 2.2e-5 above glmmTMB's whatever its optimizer (a bobyqa polish on
# its deviance function finds nothing lower) and its finite-difference SEs
# are 1e-4 off glmmTMB's exact ones, so the reference is glmmTMB's fit
# (DESIGN.md: "or glmmTMB's exact-derivative Laplace"), with glmer's
# deviance and SEs beside it (glmer_objective, glmer_std_errors); the
# sites' conditional modes and SDs are glmer's (given β, as fedmix reports them).
# Writes Tests/Fixtures/nested-glmm/{sites/*.csv,references.json}.
#   Rscript Tests/Fixtures/tools/nested-glmm-references.R   (from the repository root)
suppressMessages({ library(lme4); library(glmmTMB); library(jsonlite) })
out_dir <- "Tests/Fixtures/nested-glmm"

set.seed(1919)
rows <- list()
for (s in c("A", "B", "C")) {
  np <- c(A = 300, B = 250, C = 200)[[s]]
  u_site <- c(A = -0.5, B = 0.1, C = 0.6)[[s]]   # three sites: fixed, so that the site variance is not estimated at 0
  for (p in seq_len(np)) {
    u_pat <- rnorm(1, 0, 0.9)
    for (e in seq_len(sample(1:4, 1))) {
      u_ep <- rnorm(1, 0, 1.0)
      nv <- sample(2:5, 1)
      age <- round(rnorm(nv), 3)
      died <- rbinom(nv, 1, plogis(-0.8 + 0.5 * age + u_site + u_pat + u_ep))
      # Patient and episode codes are local: "p1" recurs at every site, "e1" in every patient.
      rows[[length(rows) + 1]] <- data.frame(site = s, patient = paste0("p", p), episode = paste0("e", e), age = age, died = died)
    }
  }
}
d <- do.call(rbind, rows)
stopifnot(min(table(d$site, d$died)) >= 5)
dir <- file.path(out_dir, "sites")
unlink(dir, recursive = TRUE); dir.create(dir, recursive = TRUE)
for (s in unique(d$site)) write.csv(d[d$site == s, ], file.path(dir, paste0(s, ".csv")), row.names = FALSE, quote = FALSE)

form <- died ~ age + (1 | site/patient/episode)
m1 <- glmer(form, d, family = binomial, nAGQ = 1,
            control = glmerControl(optimizer = "bobyqa", optCtrl = list(rhoend = 1e-12, maxfun = 1e6), tolPwrss = 1e-13))
m2 <- glmer(form, d, family = binomial, nAGQ = 1,
            control = glmerControl(tolPwrss = 1e-13, optimizer = "nloptwrap",
              optCtrl = list(xtol_abs = 1e-12, ftol_abs = 1e-14, ftol_rel = 1e-15, xtol_rel = 1e-12, maxeval = 100000)))
dev <- function(m) { dd <- update(m, devFunOnly = TRUE); dd(c(getME(m, "theta"), fixef(m))) }
d1 <- dev(m1); d2 <- dev(m2)
m <- if (d1 <= d2) m1 else m2
cat("bobyqa", sprintf("%.12f", d1), " nloptwrap", sprintf("%.12f", d2), "\n")
t <- glmmTMB(form, d, family = binomial)
tmb_objective <- -2 * as.numeric(logLik(t))
cat("glmmTMB", sprintf("%.12f", tmb_objective), "\n")
stopifnot(tmb_objective < min(d1, d2))
s <- summary(t)$coefficients$cond
sds <- sapply(VarCorr(t)$cond, function(v) unname(attr(v, "stddev")))
groups <- c("episode:(patient:site)", "patient:site", "site")
tmb_names <- c("episode:patient:site", "patient:site", "site")
# The sites' modes and conditional SDs given β, as lme4's ranef(condVar = TRUE) (glmmTMB's condVar adds β's uncertainty).
re <- ranef(m, condVar = TRUE)$site
pv <- attr(re, "postVar")
ref <- list(case = "nested-glmm", formula = "died ~ age + (1 | site/patient/episode)", family = "binomial",
            source = "glmmTMB (Laplace, exact derivatives)",
            objective = tmb_objective, glmer_objective = min(d1, d2),
            theta = I(unname(sds[tmb_names])),
            fixed = list(names = I(rownames(s)), estimates = I(unname(s[, 1])), std_errors = I(unname(s[, 2]))),
            glmer_std_errors = I(unname(summary(m)$coefficients[, 2])),
            loglik = as.numeric(logLik(t)), n_obs = nobs(m), n_groups = as.list(ngrps(m)),
            variance_components = lapply(seq_along(groups), function(i)
              list(group = groups[i], var1 = "(Intercept)", vcov = unname(sds[tmb_names[i]])^2, sdcor = unname(sds[tmb_names[i]]))),
            # The patients' and episodes' modes stay at their sites (docs/PRIVACY.md): the sites' only.
            ranef = list(list(group = "site", levels = I(rownames(re)), columns = I(colnames(re)),
                              modes = unname(as.matrix(re)),
                              cond_sd = do.call(rbind, lapply(seq_len(nrow(re)), function(i) sqrt(diag(as.matrix(pv[, , i]))))))),
            lme4_version = as.character(packageVersion("lme4")), glmmTMB_version = as.character(packageVersion("glmmTMB")),
            generator = "Tests/Fixtures/tools/nested-glmm-references.R")
writeLines(toJSON(list(died = ref), auto_unbox = TRUE, digits = NA, pretty = TRUE, null = "null"), file.path(out_dir, "references.json"))
cat("rows", nrow(d), "groups", paste(unlist(ngrps(m)), collapse = "/"), "\n")
