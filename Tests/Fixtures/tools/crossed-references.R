# References for grouping factors crossed with the sites (issue 17;
# Tests/IntegrationTests/CrossedFactorTests.swift): the data, one CSV per
# site under Tests/Fixtures/crossed/CASE/, and lmer's fit on the pooled rows
# at tight tolerances (bobyqa, rhoend 1e-12) in Tests/Fixtures/crossed/references.json.
#   penicillin: lme4's Penicillin, plate as the site, sample crossed.
#   registry:   simulated (seed 17): 8 hospitals, years 2011-2020 at every
#               hospital, 3 wards per hospital (codes W1-W3 at each), 12
#               surgeons who operate at 2-3 hospitals each.
#   surgeons:   simulated (seed 23): 20 hospitals, 300 surgeons at 2-4 each;
#               3-6 wards per hospital (codes W1.. at each) for yw.
# Run from the repository root: Rscript Tests/Fixtures/tools/crossed-references.R
# (A rerun on another machine refits every case; lmer's bobyqa then reproduces the
# stored references to about 1e-6 only, so surgeons_wards was added to the stored
# file alone, the others kept as they were.)
# REML fits also carry lmerTest's Satterthwaite df and pbkrtest's
# Kenward-Roger SEs and df. Needs R, lme4, lmerTest, pbkrtest and jsonlite (not the tests).
suppressMessages({ library(lme4); library(jsonlite); library(lmerTest); library(pbkrtest) })
out_dir <- "Tests/Fixtures/crossed"

write_sites <- function(d, case) {
  dir <- file.path(out_dir, case)
  unlink(dir, recursive = TRUE); dir.create(dir, recursive = TRUE)
  for (s in unique(d$site)) write.csv(d[d$site == s, ], file.path(dir, paste0(s, ".csv")), row.names = FALSE, quote = FALSE)
}

# Penicillin: 24 plates (sites) × 6 samples, one row each.
data(Penicillin, package = "lme4")
pen <- data.frame(site = as.character(Penicillin$plate), sample = as.character(Penicillin$sample),
                  diameter = Penicillin$diameter)
write_sites(pen, "penicillin")

# The simulated registry.
set.seed(17)
hospitals <- sprintf("H%02d", 1:8)
years <- 2011:2020
surgeons_at <- list(H01 = c("S01", "S02", "S03"), H02 = c("S02", "S04"), H03 = c("S03", "S05", "S06"),
                    H04 = c("S04", "S07"), H05 = c("S05", "S08", "S09"), H06 = c("S07", "S10"),
                    H07 = c("S08", "S11", "S12"), H08 = c("S01", "S06", "S09", "S10", "S11", "S12"))
u_site <- rnorm(8, 0, 0.8); names(u_site) <- hospitals
u_year <- rnorm(10, 0, 0.5); names(u_year) <- years
s_year <- rnorm(10, 0, 0.3); names(s_year) <- years
u_surg <- rnorm(12, 0, 0.6); names(u_surg) <- sprintf("S%02d", 1:12)
rows <- list()
for (h in hospitals) {
  for (yr in years) {
    n <- 6 + sample(0:6, 1)
    rows[[length(rows) + 1]] <- data.frame(site = h, year = yr, n = n)
  }
}
cells <- do.call(rbind, rows)
reg <- cells[rep(seq_len(nrow(cells)), cells$n), c("site", "year")]
reg$ward <- ave(seq_len(nrow(reg)), reg$site, FUN = function(i) paste0("W", rep(1:3, length.out = length(i))[sample(length(i))]))
reg$surgeon <- ave(seq_len(nrow(reg)), reg$site, FUN = function(i) {
  s <- surgeons_at[[reg$site[i[1]]]]; rep(s, length.out = length(i))[sample(length(i))] })
u_ward <- rnorm(24, 0, 0.4); names(u_ward) <- paste(rep(hospitals, each = 3), paste0("W", 1:3))
reg$x <- round(rnorm(nrow(reg), 0, 1), 3)
yc <- as.character(reg$year)
reg$y <- round(2 + 0.7 * reg$x + u_site[reg$site] + u_year[yc] + s_year[yc] * reg$x + u_surg[reg$surgeon] +
               u_ward[paste(reg$site, reg$ward)] + rnorm(nrow(reg), 0, 1), 4)
rownames(reg) <- NULL
write_sites(reg, "registry")
stopifnot(min(table(reg$site, reg$year)) >= 5, min(table(reg$site, reg$surgeon)[table(reg$site, reg$surgeon) > 0]) >= 5)

# Many surgeons (the level-by-level elimination, Math/CrossedLevelElimination):
# 20 hospitals, 300 surgeons who operate at 2-4 of them, 5-8 rows per cell.
set.seed(23)
hosp20 <- sprintf("H%02d", 1:20)
cells20 <- do.call(rbind, lapply(sprintf("S%03d", 1:300), function(s)
  data.frame(site = sample(hosp20, sample(2:4, 1)), surgeon = s)))
sur <- cells20[rep(seq_len(nrow(cells20)), sample(5:8, nrow(cells20), replace = TRUE)), ]
sur$x <- round(rnorm(nrow(sur)), 3)
a20 <- rnorm(20, 0, 0.7); names(a20) <- hosp20
s20 <- rnorm(20, 0, 0.2); names(s20) <- hosp20
g300 <- rnorm(300, 0, 0.5); names(g300) <- sprintf("S%03d", 1:300)
sur$y <- round(1 + 0.6 * sur$x + a20[sur$site] + s20[sur$site] * sur$x + g300[sur$surgeon] + rnorm(nrow(sur)), 4)
# Wards within the hospitals (the level path beside within-site terms,
# Math/CrossedLowRank.swift), drawn after every column above, which with its
# references is unchanged: 3-6 wards per hospital (codes W1.. at each), each
# row in one at random, and yw = y plus the ward's effect.
nw <- sample(3:6, 20, replace = TRUE); names(nw) <- hosp20
sur$ward <- paste0("W", vapply(sur$site, function(h) sample.int(nw[[h]], 1), 1L))
w_eff <- rnorm(sum(nw), 0, 0.4)
names(w_eff) <- unlist(lapply(hosp20, function(h) paste(h, paste0("W", seq_len(nw[[h]])))))
sur$yw <- round(sur$y + w_eff[paste(sur$site, sur$ward)], 4)
sur <- sur[order(sur$site), ]
rownames(sur) <- NULL
write_sites(sur, "surgeons")

tight <- lmerControl(optimizer = "bobyqa", optCtrl = list(rhoend = 1e-12, maxfun = 1e6))
fits <- list(
  penicillin_reml = list(data = pen, case = "penicillin", reml = TRUE,
                         fedmix = "diameter ~ 1 + (1 | site) + (1 | sample)", r = diameter ~ 1 + (1 | site) + (1 | sample)),
  penicillin_ml = list(data = pen, case = "penicillin", reml = FALSE,
                       fedmix = "diameter ~ 1 + (1 | site) + (1 | sample)", r = diameter ~ 1 + (1 | site) + (1 | sample)),
  year_reml = list(data = reg, case = "registry", reml = TRUE,
                   fedmix = "y ~ x + (1 | site) + (1 | year)", r = y ~ x + (1 | site) + (1 | year)),
  year_ml = list(data = reg, case = "registry", reml = FALSE,
                 fedmix = "y ~ x + (1 | site) + (1 | year)", r = y ~ x + (1 | site) + (1 | year)),
  year_slope = list(data = reg, case = "registry", reml = TRUE,
                    fedmix = "y ~ x + (1 | site) + (1 + x | year)", r = y ~ x + (1 | site) + (1 + x | year)),
  nested_and_year = list(data = reg, case = "registry", reml = TRUE,
                         fedmix = "y ~ x + (1 | site/ward) + (1 | year)", r = y ~ x + (1 | site/ward) + (1 | year)),
  year_and_surgeon = list(data = reg, case = "registry", reml = TRUE,
                          fedmix = "y ~ x + (1 | site) + (1 | year) + (1 | surgeon)", r = y ~ x + (1 | site) + (1 | year) + (1 | surgeon)),
  year_only = list(data = reg, case = "registry", reml = TRUE,
                   fedmix = "y ~ x + (1 | year)", r = y ~ x + (1 | year)),
  surgeons_reml = list(data = sur, case = "surgeons", reml = TRUE, inference = FALSE,
                       fedmix = "y ~ x + (1 | site) + (1 | surgeon)", r = y ~ x + (1 | site) + (1 | surgeon)),
  surgeons_slope = list(data = sur, case = "surgeons", reml = TRUE, inference = FALSE,
                        fedmix = "y ~ x + (1 + x | site) + (1 | surgeon)", r = y ~ x + (1 + x | site) + (1 | surgeon)),
  surgeons_wards = list(data = sur, case = "surgeons", reml = TRUE, inference = FALSE,
                        fedmix = "yw ~ x + (1 | site/ward) + (1 | surgeon)", r = yw ~ x + (1 | site/ward) + (1 | surgeon))
)
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
  m <- lme4::lmer(f$r, f$data, REML = f$reml, control = tight)
  s <- summary(m)$coefficients
  p <- nrow(s)
  inference <- NULL
  if (f$reml && !isFALSE(f$inference)) {   # pbkrtest's n × n matrices: not for the surgeons' 5,000 rows
    sdf <- summary(as_lmerModLmerTest(m))$coefficients[, "df"]
    v <- vcovAdj(m)
    kr_df <- sapply(seq_len(p), function(k) { L <- rep(0, p); L[k] <- 1; Lb_ddf(matrix(L, nrow = 1), vcov(m), v) })
    inference <- list(satterthwaite_df = I(unname(sdf)), kr_std_errors = I(unname(sqrt(diag(as.matrix(v))))), kr_df = I(unname(kr_df)))
  }
  vc <- as.data.frame(VarCorr(m))
  list(case = f$case, formula = f$fedmix, method = if (f$reml) "REML" else "ML",
       objective = if (f$reml) REMLcrit(m) else deviance(m),
       fixed = list(names = I(rownames(s)), estimates = I(unname(s[, 1])), std_errors = I(unname(s[, 2]))),
       sigma = sigma(m), loglik = as.numeric(logLik(m)), n_obs = nobs(m),
       variance_components = lapply(seq_len(nrow(vc)), function(i)
         list(group = vc$grp[i], var1 = if (is.na(vc$var1[i])) NULL else vc$var1[i],
              var2 = if (is.na(vc$var2[i])) NULL else vc$var2[i], vcov = vc$vcov[i], sdcor = vc$sdcor[i])),
       ranef = ranef_table(m), inference = inference)
})
names(refs) <- names(fits)
writeLines(toJSON(refs, auto_unbox = TRUE, digits = NA, pretty = TRUE, null = "null"), file.path(out_dir, "references.json"))
