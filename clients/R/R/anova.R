# anova(fit0, fit1, ...): likelihood-ratio comparison through `fedmix compare`,
# which fits every formula on the same rows (and linear models by ML, as
# lme4's anova refits them).

anova.fedmix_fit <- function(object, ...) {
  dots <- list(...)
  fits <- c(list(object), dots)
  is_fit <- vapply(fits, inherits, NA, what = "fedmix_fit")
  if (!all(is_fit)) stop("anova() compares fedmix_fit objects only", call. = FALSE)
  if (length(fits) < 2L)
    stop("anova() of one fedmix fit: give two or more nested fits to compare (fedmix has no sequential ANOVA table)", call. = FALSE)
  labels <- vapply(as.list(match.call())[-1L], function(e) paste(deparse(e), collapse = " "), "")
  labels <- labels[seq_along(fits)]
  specs <- lapply(fits, `[[`, "spec")
  if (any(vapply(specs, is.null, NA)))
    stop("anova() needs fits made by fedmix_fit() (a fit read from a file has no command to re-run)", call. = FALSE)
  same <- function(field) all(vapply(specs, function(s) identical(s[[field]], specs[[1L]][[field]]), NA))
  model_opts <- lapply(specs, function(s) setdiff(s$model, "--ml"))
  if (!same("command") || !same("source") || !same("extra") || !same("family") ||
      !all(vapply(model_opts, identical, NA, model_opts[[1L]])))
    stop("anova(): the fits differ in their data, family, weights, filter or options; fedmix compare needs the same data for all models", call. = FALSE)
  fedmix <- fits[[1L]]$fedmix
  if (!has_command(fedmix, "compare"))
    stop(sprintf("this fedmix (%s) has no 'compare' command, which anova() needs; a fedmix with 'fedmix compare' is required",
                 fedmix), call. = FALSE)
  s <- specs[[1L]]
  formulas <- as.vector(rbind("--formula", vapply(specs, `[[`, "", "formula")))
  args <- c("compare", s$source, formulas, model_opts[[1L]], s$extra, "--format", "json")
  json <- parse_json(run_fedmix(fedmix, args))
  anova_table(json, labels, vapply(specs, `[[`, "", "formula"))
}

anova_table <- function(json, labels, formulas) {
  rows <- json$anova
  if (!length(rows)) stop("fedmix compare returned no \"anova\" rows", call. = FALSE)
  col <- function(name) vapply(rows, function(r) num(r[[name]]), 0)
  tab <- data.frame(npar = col("npar"), AIC = col("aic"), BIC = col("bic"), logLik = col("loglik"),
                    deviance = col("deviance"), Chisq = col("chisq"), Df = col("df"),
                    check.names = FALSE)
  tab[["Pr(>Chisq)"]] <- col("p_value")
  mixture <- col("p_value_mixture")
  if (any(!is.na(mixture))) tab[["Pr(mixture)"]] <- mixture
  # rows are named by the R objects: by the formula in fedmix's "model" field
  # when it is one, else in the order the formulas were given
  ids <- vapply(rows, function(r) chr(r$model), "")
  which <- match(ids, formulas)
  if (anyNA(which) || anyDuplicated(which) || length(which) != length(labels)) which <- seq_along(labels)
  rownames(tab) <- make.unique(labels[which])
  heading <- c("Likelihood-ratio comparison by fedmix compare (the same rows for every model)\n",
               paste0("Models:\n", paste0(labels[which], ": ", formulas[which], collapse = "\n")))
  structure(tab, heading = heading, models = json$models, class = c("anova", "data.frame"))
}
