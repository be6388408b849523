# ScotsSec (mlmRev) split by secondary school: one site per `second`, with the
# primary-school codes as numbers. Primary schools feed several secondary
# schools, so `primary` crosses the sites: fedmix must refuse (1 | primary)
# and fit (1 | site:primary), which is lme4's fit of (1 | second:primary) on
# the pooled rows.
#   Rscript Tests/Fixtures/tools/scotssec-primary.R   (from the package root)
suppressMessages({ library(lme4); library(mlmRev); library(jsonlite) })
out <- "Tests/Fixtures/reference/scotssec-primary"
dir.create(file.path(out, "sites"), recursive = TRUE, showWarnings = FALSE)
d <- ScotsSec
pooled <- data.frame(site = sprintf("S%02d", as.integer(as.character(d$second))),
                     attain = d$attain, verbal = d$verbal, sex = as.character(d$sex),
                     social = d$social, primary = as.integer(as.character(d$primary)))
write.csv(pooled, file.path(out, "pooled.csv"), row.names = FALSE)
for (s in sort(unique(pooled$site)))
  write.csv(pooled[pooled$site == s, ], file.path(out, "sites", paste0(s, ".csv")), row.names = FALSE)

tight <- lmerControl(optimizer = "bobyqa", optCtrl = list(rhoend = 1e-12, maxfun = 1e5))
pooled$sex <- factor(pooled$sex, levels = c("F", "M"))
describe <- function(fit, formula) {
  vc <- as.data.frame(VarCorr(fit))
  list(formula = formula, method = if (isREML(fit)) "REML" else "ML", family = "gaussian", link = "identity",
       n_obs = nobs(fit), n_groups = as.list(sapply(ranef(fit), nrow)),
       fixed_effects = lapply(seq_along(fixef(fit)), function(k) list(name = names(fixef(fit))[k],
         estimate = unname(fixef(fit)[k]), std_error = unname(sqrt(diag(as.matrix(vcov(fit))))[k]))),
       theta = unname(getME(fit, "theta")), theta_names = names(getME(fit, "theta")),
       variance_components = lapply(seq_len(nrow(vc)), function(k) list(grp = vc$grp[k],
         var1 = if (is.na(vc$var1[k])) NULL else vc$var1[k], var2 = if (is.na(vc$var2[k])) NULL else vc$var2[k],
         vcov = vc$vcov[k], sdcor = vc$sdcor[k])),
       sigma = sigma(fit), loglik = as.numeric(logLik(fit)), aic = AIC(fit), bic = BIC(fit),
       objective = unname(if (isREML(fit)) fit@devcomp$cmp[["REML"]] else deviance(fit)),
       singular = isSingular(fit))
}
nested <- lmer(attain ~ verbal + sex + social + (1 | site:primary), pooled, control = tight)
crossed <- lmer(attain ~ verbal + sex + social + (1 | primary), transform(pooled, primary = factor(primary)), control = tight)
ref <- list(case = "scotssec-primary", site_column = "site",
            note = "mlmRev ScotsSec split by secondary school (site = S + second); primary codes recur across sites. 'nested' is what fedmix fits for (1 | site:primary); 'crossed' is lme4's (1 | primary) on the pooled rows, which fedmix refuses.",
            lme4_version = as.character(packageVersion("lme4")),
            fits = list(nested = describe(nested, "attain ~ verbal + sex + social + (1 | site:primary)"),
                        crossed = describe(crossed, "attain ~ verbal + sex + social + (1 | primary)")))
writeLines(toJSON(ref, auto_unbox = TRUE, digits = NA, pretty = TRUE, null = "null"), file.path(out, "reference.json"))
cat("sites:", length(unique(pooled$site)), " nested groups:", ref$fits$nested$n_groups[[1]],
    " crossed groups:", ref$fits$crossed$n_groups[[1]], "\n")
