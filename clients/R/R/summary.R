# print() and summary() in lme4's layout, formatted from the JSON result.

fit_title <- function(object) {
  j <- object$json
  sites <- sprintf("[fedmix, %d site%s]", as.integer(j$n_sites), if (identical(as.integer(j$n_sites), 1L)) "" else "s")
  if (is_glmm(object)) {
    method <- j$model$method
    paste0("Generalized linear mixed model fit by maximum likelihood (", method, ") ", sites)
  } else {
    paste0("Linear mixed model fit by ", if (is_reml(object)) "REML" else "maximum likelihood", " ", sites)
  }
}

groups_line <- function(object) {
  g <- object$json$n_groups
  order <- unlist(object$json$group_order)
  if (is.null(order)) order <- names(g)
  parts <- vapply(order, function(n) paste0(n, ", ", g[[n]]), "")
  paste0("Number of obs: ", object$json$n_obs,
         if (length(parts)) paste0(", groups:  ", paste(parts, collapse = "; ")) else "")
}

info_table <- function(object) {
  j <- object$json
  c(AIC = num(j$aic), BIC = num(j$bic), logLik = num(j$loglik),
    deviance = if (is_reml(object)) NA_real_ else num(j$objective), df.resid = num(j$df_resid))
}

print_info <- function(info, fmt) {
  info <- info[!is.na(info)]
  print(vapply(info, fmt, ""), quote = FALSE, right = TRUE)
}

print.fedmix_fit <- function(x, digits = max(3L, getOption("digits") - 3L), ...) {
  j <- x$json
  cat(fit_title(x), "\n", sep = "")
  if (is_glmm(x)) cat(" Family: ", j$model$family, "  ( ", j$model$link, " )\n", sep = "")
  cat("Formula: ", j$model$formula, "\n", sep = "")
  info <- info_table(x)
  if (is_reml(x)) {
    cat("REML criterion at convergence: ", format(num(j$objective), digits = digits + 2L), "\n", sep = "")
  } else {
    print_info(info, function(v) format(round(v, 4L)))
  }
  cat("Random effects:\n")
  print(format_varcorr(as.data.frame(VarCorr(x)), digits = digits, comp = "Std.Dev."),
        quote = FALSE, right = FALSE)
  cat(groups_line(x), "\n", sep = "")
  cat("Fixed Effects:\n")
  print(fixef(x), digits = digits)
  notes(x)
  invisible(x)
}

notes <- function(x) {
  j <- x$json
  if (!isTRUE(j$converged)) cat("fedmix: not converged: ", chr(j$convergence), "\n", sep = "")
  if (isTRUE(j$singular)) cat("boundary (singular) fit: see help('isSingular', package = 'lme4')\n")
  for (m in unlist(j$messages)) cat(m, "\n", sep = "")
  excl <- j$exclusions
  if (length(excl)) {
    for (e in excl) cat("Excluded site ", chr(e$site), ": ", chr(e$reason), "\n", sep = "")
  }
}

summary.fedmix_fit <- function(object, ...) {
  fe <- fixed_table(object)
  stat <- if (is_glmm(object)) "z value" else "t value"
  coefs <- cbind(fe$estimate, fe$std.error, fe$statistic)
  colnames(coefs) <- c("Estimate", "Std. Error", stat)
  if (is_glmm(object)) {
    coefs <- cbind(coefs, fe$p.value)
    colnames(coefs)[4L] <- "Pr(>|z|)"
  }
  rownames(coefs) <- fe$term
  v <- tryCatch(vcov(object), error = function(e) NULL)
  corr <- if (!is.null(v) && nrow(v) > 1L) stats::cov2cor(v) else NULL
  sites <- object$json$sites
  site_table <- data.frame(
    site = vapply(sites, function(s) chr(s$site), ""),
    rows = vapply(sites, function(s) num(s$n_rows), 0),
    used = vapply(sites, function(s) num(s$n_used), 0),
    sent = vapply(sites, function(s) num(s$bytes_sent), 0),
    received = vapply(sites, function(s) num(s$bytes_received), 0),
    stringsAsFactors = FALSE)
  structure(list(fit = object, coefficients = coefs, varcor = VarCorr(object),
                 correlation = corr, info = info_table(object),
                 icc = unlist(object$json$icc), sites = site_table,
                 ranef = ranef(object)),
            class = "summary.fedmix_fit")
}

coef.summary.fedmix_fit <- function(object, ...) object$coefficients

print.summary.fedmix_fit <- function(x, digits = max(3L, getOption("digits") - 3L),
                                     signif.stars = getOption("show.signif.stars"), ...) {
  fit <- x$fit
  j <- fit$json
  cat(fit_title(fit), "\n", sep = "")
  if (is_glmm(fit)) cat(" Family: ", j$model$family, "  ( ", j$model$link, " )\n", sep = "")
  cat("Formula: ", j$model$formula, "\n", sep = "")
  cat("\n")
  if (is_reml(fit)) {
    cat("REML criterion at convergence: ", format(round(num(j$objective), 1L), nsmall = 1L), "\n", sep = "")
  } else {
    print_info(x$info, function(v) format(v, digits = digits))
  }
  cat("\nRandom effects:\n")
  print(format_varcorr(as.data.frame(x$varcor), digits = digits), quote = FALSE, right = FALSE)
  cat(groups_line(fit), "\n", sep = "")
  cat("\nFixed effects:\n")
  stats::printCoefmat(x$coefficients, digits = digits, signif.stars = signif.stars,
                      has.Pvalue = is_glmm(fit))
  if (!is.null(x$correlation)) {
    p <- nrow(x$correlation)
    if (p <= 12L) {
      cat("\nCorrelation of Fixed Effects:\n")
      corr <- format(round(x$correlation, 3L), nsmall = 3L)
      corr[upper.tri(corr, diag = TRUE)] <- ""
      short <- abbreviate(rownames(x$correlation), minlength = 6L)
      dimnames(corr) <- list(abbreviate(rownames(x$correlation), minlength = 11L), short)
      print(corr[-1L, -p, drop = FALSE], quote = FALSE)
    } else {
      cat("\nCorrelation matrix not shown by default, as p =", p, "> 12.\n")
    }
  }
  if (length(x$icc)) {
    cat("\nIntraclass correlation (random intercepts, covariates at 0):\n")
    print(round(x$icc, 3L))
  }
  cat("\nSites:\n")
  sites <- x$sites
  re <- x$ranef$site
  if (!is.null(re)) {
    for (t in names(re)) sites[[paste0("effect ", t)]] <- signif(re[[t]][match(sites$site, rownames(re))], digits)
  }
  print(sites, row.names = FALSE)
  cat("\n")
  notes(fit)
  cat(sprintf("fedmix: %d sites, %s rounds, %s criterion evaluations; %s\n",
              as.integer(j$n_sites), chr(j$rounds), chr(j$evaluations),
              if (isTRUE(j$converged)) "converged" else "NOT converged"))
  invisible(x)
}
