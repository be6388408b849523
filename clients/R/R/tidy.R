# broom-style tidy() and glance(), in broom.mixed's column names.

tidy.fedmix_fit <- function(x, effects = c("fixed", "ran_pars"), scales = c("sdcor", "vcov"),
                            conf.int = FALSE, conf.level = 0.95, conf.method = c("Wald", "profile"), ...) {
  effects <- match.arg(effects, c("fixed", "ran_pars", "ran_vals"), several.ok = TRUE)
  scales <- match.arg(scales)
  conf.method <- match.arg(conf.method)
  parts <- list()
  if ("fixed" %in% effects) {
    fe <- fixed_table(x)
    part <- data.frame(effect = "fixed", group = NA_character_, fe, stringsAsFactors = FALSE)
    if (conf.int) {
      ci <- confint(x, level = conf.level, method = conf.method)
      part$conf.low <- unname(ci[fe$term, 1L])
      part$conf.high <- unname(ci[fe$term, 2L])
    }
    parts$fixed <- part
  }
  if ("ran_pars" %in% effects) {
    vc <- as.data.frame(VarCorr(x))
    prefix <- ifelse(is.na(vc$var2), if (scales == "sdcor") "sd__" else "var__",
                     if (scales == "sdcor") "cor__" else "cov__")
    term <- ifelse(is.na(vc$var2), ifelse(is.na(vc$var1), "Observation", vc$var1),
                   paste(vc$var1, vc$var2, sep = "."))
    part <- data.frame(effect = "ran_pars", group = vc$grp, term = paste0(prefix, term),
                       estimate = if (scales == "sdcor") vc$sdcor else vc$vcov,
                       std.error = NA_real_, statistic = NA_real_, p.value = NA_real_,
                       stringsAsFactors = FALSE)
    if (conf.int) {
      part$conf.low <- NA_real_
      part$conf.high <- NA_real_
    }
    parts$ran_pars <- part
  }
  if ("ran_vals" %in% effects) {
    re <- as.data.frame(ranef(x))
    part <- data.frame(effect = rep("ran_vals", nrow(re)), group = re$grpvar, level = re$grp,
                       term = re$term, estimate = re$condval, std.error = re$condsd,
                       statistic = NA_real_, p.value = NA_real_, stringsAsFactors = FALSE)
    if (conf.int) {
      z <- stats::qnorm((1 + conf.level) / 2)
      part$conf.low <- part$estimate - z * part$std.error
      part$conf.high <- part$estimate + z * part$std.error
    }
    parts$ran_vals <- part
  }
  if ("ran_vals" %in% effects) {
    for (k in names(parts)) if (is.null(parts[[k]]$level)) {
      parts[[k]]$level <- rep(NA_character_, nrow(parts[[k]]))
      parts[[k]] <- parts[[k]][, names(parts$ran_vals)]
    }
  }
  out <- do.call(rbind, unname(parts))
  rownames(out) <- NULL
  out
}

glance.fedmix_fit <- function(x, ...) {
  j <- x$json
  data.frame(
    nobs = nobs(x),
    n_sites = as.integer(j$n_sites),
    sigma = num(j$sigma),
    logLik = num(j$loglik),
    AIC = num(j$aic),
    BIC = num(j$bic),
    deviance = if (is_reml(x)) NA_real_ else num(j$objective),
    REMLcrit = if (is_reml(x)) num(j$objective) else NA_real_,
    df.residual = as.integer(j$df_resid),
    converged = isTRUE(j$converged),
    singular = isTRUE(j$singular),
    stringsAsFactors = FALSE)
}
