# Accessors of a fedmix_fit, in lme4's shapes.

# Generics of our own, so the package needs nothing but jsonlite. When nlme,
# lme4 or generics (broom) are loaded, the methods are also registered for
# their generics (NAMESPACE: delayed S3method registration), and our generics
# hand other classes on to theirs. (Not through .default methods: a generic
# called from this namespace would find them and call back here.)

fixef <- function(object, ...) {
  if (!inherits(object, "fedmix_fit") && isNamespaceLoaded("nlme"))
    return(getExportedValue("nlme", "fixef")(object, ...))
  UseMethod("fixef")
}
ranef <- function(object, ...) {
  if (!inherits(object, "fedmix_fit") && isNamespaceLoaded("nlme"))
    return(getExportedValue("nlme", "ranef")(object, ...))
  UseMethod("ranef")
}
VarCorr <- function(x, sigma = 1, ...) {
  if (!inherits(x, "fedmix_fit") && isNamespaceLoaded("lme4")) {
    generic <- getExportedValue("lme4", "VarCorr")
    return(if (missing(sigma)) generic(x, ...) else generic(x, sigma = sigma, ...))
  }
  UseMethod("VarCorr")
}
tidy <- function(x, ...) {
  if (!inherits(x, "fedmix_fit") && isNamespaceLoaded("generics"))
    return(getExportedValue("generics", "tidy")(x, ...))
  UseMethod("tidy")
}
glance <- function(x, ...) {
  if (!inherits(x, "fedmix_fit") && isNamespaceLoaded("generics"))
    return(getExportedValue("generics", "glance")(x, ...))
  UseMethod("glance")
}

num <- function(x) if (is.null(x)) NA_real_ else as.numeric(x)
chr <- function(x) if (is.null(x)) NA_character_ else as.character(x)

is_glmm <- function(object) !identical(object$json$model$family, "gaussian")
is_reml <- function(object) identical(object$json$model$method, "REML")

fixef.fedmix_fit <- function(object, ...) {
  fe <- object$json$fixed_effects
  stats::setNames(vapply(fe, function(e) num(e$estimate), 0), vapply(fe, function(e) e$name, ""))
}

fixed_table <- function(object) {
  fe <- object$json$fixed_effects
  data.frame(
    term = vapply(fe, function(e) e$name, ""),
    estimate = vapply(fe, function(e) num(e$estimate), 0),
    std.error = vapply(fe, function(e) num(e$std_error), 0),
    statistic = vapply(fe, function(e) num(e$statistic), 0),
    p.value = vapply(fe, function(e) num(e$p_value), 0),
    stringsAsFactors = FALSE)
}

vcov.fedmix_fit <- function(object, ...) {
  names <- names(fixef(object))
  rows <- object$json$vcov
  if (is.null(rows)) stop("this fedmix result has no \"vcov\" (a fedmix older than the vcov field)", call. = FALSE)
  p <- length(names)
  m <- matrix(vapply(unlist(rows, recursive = FALSE), num, 0), nrow = p, ncol = p, byrow = TRUE,
              dimnames = list(names, names))
  m
}

coef.fedmix_fit <- function(object, ...) {
  sites <- object$json$sites
  names <- names(fixef(object))
  rows <- lapply(sites, function(s) vapply(names, function(n) num(s$coefficients[[n]]), 0))
  tab <- as.data.frame(do.call(rbind, rows), stringsAsFactors = FALSE)
  names(tab) <- names
  rownames(tab) <- vapply(sites, function(s) s$site, "")
  structure(list(site = tab), class = "coef.fedmix_fit")
}

print.coef.fedmix_fit <- function(x, ...) {
  for (g in names(x)) {
    cat("$", g, "\n", sep = "")
    print(x[[g]], ...)
    cat("\n")
  }
  invisible(x)
}

# Conditional modes of the site-level random effects and of factors crossed with
# the sites, such as year or surgeon (lme4's ranef(condVar = TRUE) for those
# grouping factors). Modes of within-site groups never leave a site.
ranef.fedmix_fit <- function(object, ...) {
  sites <- object$json$sites
  terms <- unique(unlist(lapply(sites, function(s) names(s$effects))))
  out <- list()
  if (length(terms)) {
    site_names <- vapply(sites, function(s) s$site, "")
    grab <- function(field) {
      tab <- as.data.frame(lapply(stats::setNames(terms, terms), function(t)
        vapply(sites, function(s) num(s[[field]][[t]]), 0)), check.names = FALSE)
      rownames(tab) <- site_names
      tab
    }
    out$site <- structure(grab("effects"), cond_sd = grab("cond_sd"))
  }
  crossed <- object$json$crossed_effects
  for (g in unique(vapply(crossed, function(c) c$group, ""))) {
    levels <- Filter(function(c) identical(c$group, g), crossed)
    terms <- unique(unlist(lapply(levels, function(c) names(c$effects))))
    terms <- c(intersect("(Intercept)", terms), sort(setdiff(terms, "(Intercept)")))
    grab <- function(field) {
      tab <- as.data.frame(lapply(stats::setNames(terms, terms), function(t)
        vapply(levels, function(c) num(c[[field]][[t]]), 0)), check.names = FALSE)
      rownames(tab) <- vapply(levels, function(c) c$level, "")
      tab
    }
    out[[g]] <- structure(grab("effects"), cond_sd = grab("cond_sd"))
  }
  groups <- setdiff(unlist(object$json$group_order), c("site", names(out)))
  structure(out, class = "ranef.fedmix_fit", within_site = groups)
}

print.ranef.fedmix_fit <- function(x, ...) {
  if (length(x) == 0L) {
    cat("No site-level or crossed random effects in this model.\n")
  }
  for (g in names(x)) {
    cat("$", g, "\n", sep = "")
    print(as.data.frame(unclass(x[[g]])), ...)
    cat("\n")
  }
  within <- attr(x, "within_site")
  if (length(within))
    cat("Conditional modes of within-site groups (", paste(within, collapse = ", "),
        ") stay at the sites.\n", sep = "")
  invisible(x)
}

# lme4's as.data.frame(ranef(fit, condVar = TRUE)) shape.
as.data.frame.ranef.fedmix_fit <- function(x, ...) {
  rows <- list()
  for (g in names(x)) {
    tab <- x[[g]]
    sd <- attr(tab, "cond_sd")
    for (t in names(tab)) {
      rows[[length(rows) + 1L]] <- data.frame(grpvar = g, term = t, grp = rownames(tab),
                                              condval = tab[[t]], condsd = sd[[t]],
                                              stringsAsFactors = FALSE)
    }
  }
  if (!length(rows))
    return(data.frame(grpvar = character(), term = character(), grp = character(),
                      condval = numeric(), condsd = numeric(), stringsAsFactors = FALSE))
  out <- do.call(rbind, rows)
  rownames(out) <- NULL
  out
}

# lme4's as.data.frame(VarCorr(fit)): grp, var1, var2, vcov, sdcor.
VarCorr.fedmix_fit <- function(x, sigma = 1, ...) {
  vc <- x$json$variance_components
  tab <- data.frame(
    grp = vapply(vc, function(v) chr(v$group), ""),
    var1 = vapply(vc, function(v) chr(v$var1), ""),
    var2 = vapply(vc, function(v) chr(v$var2), ""),
    vcov = vapply(vc, function(v) num(v$vcov), 0),
    sdcor = vapply(vc, function(v) num(v$sdcor), 0),
    stringsAsFactors = FALSE)
  class(tab) <- c("VarCorr.fedmix_fit", "data.frame")
  tab
}

as.data.frame.VarCorr.fedmix_fit <- function(x, ...) {
  class(x) <- "data.frame"
  x
}

print.VarCorr.fedmix_fit <- function(x, digits = max(3L, getOption("digits") - 2L),
                                     comp = c("Variance", "Std.Dev."), ...) {
  print(format_varcorr(as.data.frame(x), digits = digits, comp = comp), quote = FALSE, right = FALSE)
  invisible(x)
}

# The lme4-style random-effects block: Groups, Name, Variance/Std.Dev., Corr.
format_varcorr <- function(tab, digits = 4L, comp = c("Variance", "Std.Dev.")) {
  single <- is.na(tab$var2)
  sds <- tab[single, , drop = FALSE]
  cors <- tab[!single, , drop = FALSE]
  groups <- ifelse(is.na(sds$grp), "", sds$grp)
  shown <- groups
  shown[c(FALSE, groups[-1L] == groups[-length(groups)])] <- ""
  out <- cbind(Groups = shown, Name = ifelse(is.na(sds$var1), "", sds$var1))
  if ("Variance" %in% comp) out <- cbind(out, Variance = format(sds$vcov, digits = digits))
  if ("Std.Dev." %in% comp) out <- cbind(out, Std.Dev. = format(sds$sdcor, digits = digits))
  if (nrow(cors)) {
    # per group, a lower-triangular correlation block beside its terms
    width <- 0L
    for (g in unique(sds$grp)) width <- max(width, sum(sds$grp == g & !is.na(sds$grp)) - 1L)
    corr <- matrix("", nrow(sds), width)
    for (k in seq_len(nrow(cors))) {
      g <- cors$grp[k]
      idx <- which(sds$grp == g & !is.na(sds$grp))
      terms <- sds$var1[idx]
      i <- idx[match(cors$var2[k], terms)]
      j <- match(cors$var1[k], terms)
      if (!is.na(i) && !is.na(j)) corr[i, j] <- formatC(cors$sdcor[k], format = "f", digits = 2)
    }
    colnames(corr) <- c("Corr", rep("", max(0L, width - 1L)))
    out <- cbind(out, corr)
  }
  rownames(out) <- rep("", nrow(out))
  out
}

sigma.fedmix_fit <- function(object, ...) num(object$json$sigma)

nobs.fedmix_fit <- function(object, ...) as.integer(object$json$n_obs)

df.residual.fedmix_fit <- function(object, ...) as.integer(object$json$df_resid)

formula.fedmix_fit <- function(x, ...) stats::as.formula(x$json$model$formula, env = globalenv())

family.fedmix_fit <- function(object, ...) {
  fam <- object$json$model$family
  link <- object$json$model$link
  switch(fam,
         gaussian = stats::gaussian(link = link),
         binomial = stats::binomial(link = link),
         poisson = stats::poisson(link = link),
         stop(sprintf("unknown family '%s'", fam), call. = FALSE))
}

# Parameters counted as lme4 counts them: fixed effects, theta, and sigma for LMMs.
npar <- function(object) {
  length(object$json$fixed_effects) + length(object$json$theta) + if (is_glmm(object)) 0L else 1L
}

logLik.fedmix_fit <- function(object, ...) {
  structure(num(object$json$loglik), df = npar(object), nobs = nobs(object), class = "logLik")
}

# AIC() and BIC() are stats' defaults: -2 logLik + k df, with logLik's df and nobs.

deviance.fedmix_fit <- function(object, ...) {
  if (is_reml(object))
    stop("the deviance of a REML fit is not its criterion: refit with REML = FALSE (as lme4's deviance(REML = FALSE))", call. = FALSE)
  num(object$json$objective)
}

# Wald intervals from estimate +/- z * SE; profile intervals from fedmix's
# --confint profile (the fit is run again), or from the fit's own "confint".
confint.fedmix_fit <- function(object, parm, level = 0.95, method = c("Wald", "profile"), ...) {
  method <- match.arg(method)
  if (method == "Wald") {
    fe <- fixed_table(object)
    z <- stats::qnorm((1 + level) / 2)
    ci <- cbind(fe$estimate - z * fe$std.error, fe$estimate + z * fe$std.error)
    rownames(ci) <- fe$term
  } else {
    if (!isTRUE(all.equal(level, 0.95)))
      stop("fedmix's profile intervals are 95% intervals: use level = 0.95", call. = FALSE)
    entries <- Filter(function(e) identical(e$method, "profile"), object$json$confint)
    if (!length(entries)) entries <- profile_confint(object)
    ci <- cbind(vapply(entries, function(e) num(e$lower), 0), vapply(entries, function(e) num(e$upper), 0))
    rownames(ci) <- vapply(entries, function(e) e$parameter, "")
  }
  a <- (1 - level) / 2
  colnames(ci) <- paste(format(100 * c(a, 1 - a), trim = TRUE, scientific = FALSE, digits = 3), "%")
  if (!missing(parm)) ci <- ci[parm, , drop = FALSE]
  ci
}

profile_confint <- function(object) {
  spec <- object$spec
  if (is.null(spec))
    stop("this fit was read from a file: profile intervals need the fit's command (use fedmix_fit)", call. = FALSE)
  if (!has_option(object$fedmix, spec$command, "--confint"))
    stop(sprintf(paste0("this fedmix (%s) has no --confint option on '%s': profile intervals need a fedmix ",
                        "with '--confint profile'; Wald intervals: confint(fit, method = \"Wald\")"),
                 object$fedmix, spec$command), call. = FALSE)
  args <- c(spec$command, spec$source, "--formula", spec$formula, spec$model, spec$extra,
            "--confint", "profile", "--format", "json")
  json <- parse_json(run_fedmix(object$fedmix, args))
  entries <- Filter(function(e) identical(e$method, "profile"), json$confint)
  if (!length(entries)) stop("fedmix returned no profile intervals (no \"confint\" entries with method \"profile\")", call. = FALSE)
  entries
}
