# Running the fedmix command-line tool and reading its JSON result.

# The formula as one line of text, as fedmix reads it.
formula_text <- function(formula) {
  if (inherits(formula, "formula")) {
    text <- paste(deparse(formula, width.cutoff = 500L), collapse = " ")
  } else if (is.character(formula) && length(formula) == 1L && !is.na(formula)) {
    text <- formula
  } else {
    stop("'formula' must be a formula or a single string", call. = FALSE)
  }
  gsub("[[:space:]]+", " ", trimws(text))
}

# family may be a string ("binomial") or a family object (binomial("probit")).
family_spec <- function(family, link) {
  if (is.function(family)) family <- family()
  if (inherits(family, "family")) {
    if (is.null(link)) link <- family$link
    family <- family$family
  }
  if (!is.character(family) || length(family) != 1L)
    stop("'family' must be \"gaussian\", \"binomial\", \"poisson\" or a family object", call. = FALSE)
  if (identical(family, "gaussian") && identical(link, "identity")) link <- NULL
  if (identical(family, "binomial") && identical(link, "logit")) link <- NULL
  if (identical(family, "poisson") && identical(link, "log")) link <- NULL
  list(family = family, link = link)
}

# A weights argument: a column name or a one-sided formula (~ size).
weights_name <- function(weights) {
  if (is.null(weights)) return(NULL)
  if (inherits(weights, "formula")) {
    if (length(weights) != 2L) stop("'weights' as a formula must be one-sided, e.g. ~ size", call. = FALSE)
    return(paste(deparse(weights[[2L]], width.cutoff = 500L), collapse = " "))
  }
  if (is.character(weights) && length(weights) == 1L) return(weights)
  stop("'weights' must be a column name or a one-sided formula: fedmix reads weights at the sites", call. = FALSE)
}

# Named arguments in ... become options (in_process = TRUE -> --in-process,
# exclude_sites = "a,b" -> --exclude-sites a,b); unnamed ones are passed as they are.
extra_options <- function(dots) {
  out <- character()
  nms <- names(dots)
  if (is.null(nms)) nms <- rep("", length(dots))
  for (k in seq_along(dots)) {
    value <- dots[[k]]
    if (!nzchar(nms[k])) {
      out <- c(out, as.character(value))
      next
    }
    option <- paste0("--", gsub("_", "-", nms[k], fixed = TRUE))
    if (is.null(value) || identical(value, FALSE)) next
    if (identical(value, TRUE)) {
      out <- c(out, option)
    } else {
      for (v in as.character(value)) out <- c(out, option, v)
    }
  }
  out
}

# The data source: local CSV paths or a sites file and dataset.
source_args <- function(sites, dataset, paths) {
  if (!is.null(paths)) {
    if (!is.null(sites) || !is.null(dataset))
      stop("give either 'paths' (local CSV files) or 'sites' and 'dataset' (site agents), not both", call. = FALSE)
    paths <- as.character(paths)
    if (length(paths) == 0L) stop("'paths' is empty", call. = FALSE)
    return(list(command = "local", args = paths))
  }
  if (is.null(sites) || is.null(dataset))
    stop("give 'sites' (the sites file) and 'dataset', or 'paths' (local CSV files or folders)", call. = FALSE)
  list(command = "fit", args = c("--sites", as.character(sites), "--dataset", as.character(dataset)))
}

# Everything after the command and data source: the model's options.
model_args <- function(family, REML, nAGQ, weights, filter) {
  args <- character()
  if (family$family != "gaussian") args <- c(args, "--family", family$family)
  if (!is.null(family$link)) args <- c(args, "--link", family$link)
  if (family$family == "gaussian") {
    if (!isTRUE(REML)) args <- c(args, "--ml")
  } else if (!identical(as.numeric(nAGQ), 1)) {
    args <- c(args, "--nagq", format(as.integer(nAGQ)))
  }
  w <- weights_name(weights)
  if (!is.null(w)) args <- c(args, "--weights", w)
  if (!is.null(filter)) args <- c(args, "--filter", as.character(filter))
  args
}

# Runs fedmix with args; returns its standard output (lines). A non-zero exit
# is an R error whose message is fedmix's standard error.
run_fedmix <- function(fedmix, args) {
  exe <- fedmix_executable(fedmix)
  out <- tempfile("fedmix-out-")
  err <- tempfile("fedmix-err-")
  on.exit(unlink(c(out, err)), add = TRUE)
  status <- suppressWarnings(system2(exe, shQuote(args), stdout = out, stderr = err))
  stdout <- if (file.exists(out)) readLines(out, warn = FALSE, encoding = "UTF-8") else character()
  stderr <- if (file.exists(err)) readLines(err, warn = FALSE, encoding = "UTF-8") else character()
  if (!identical(as.integer(status), 0L)) {
    message <- trimws(paste(stderr, collapse = "\n"))
    if (!nzchar(message)) message <- sprintf("fedmix exited with status %s and no message", status)
    cond <- structure(class = c("fedmix_error", "error", "condition"),
                      list(message = message, call = NULL, status = status, args = args))
    stop(cond)
  }
  stdout
}

# The executable's path; an error naming what was looked for if it is missing.
fedmix_executable <- function(fedmix) {
  if (!is.character(fedmix) || length(fedmix) != 1L || !nzchar(fedmix))
    stop("'fedmix' must be the path of the fedmix executable", call. = FALSE)
  if (grepl("/", fedmix, fixed = TRUE)) {
    if (!file.exists(fedmix)) stop(sprintf("the fedmix executable '%s' does not exist (set FEDMIX or pass fedmix =)", fedmix), call. = FALSE)
    return(normalizePath(fedmix))
  }
  found <- Sys.which(fedmix)
  if (!nzchar(found)) stop(sprintf("the fedmix executable '%s' is not on the PATH (set FEDMIX to its path or pass fedmix =)", fedmix), call. = FALSE)
  unname(found)
}

# Whether this fedmix has a command (fedmix CMD --help succeeds).
has_command <- function(fedmix, command) {
  ok <- tryCatch({ run_fedmix(fedmix, c(command, "--help")); TRUE }, error = function(e) FALSE)
  ok
}

# Whether a command's help mentions an option.
has_option <- function(fedmix, command, option) {
  help <- tryCatch(run_fedmix(fedmix, c(command, "--help")), error = function(e) character())
  any(grepl(paste0(option, "\\b"), help))
}

parse_json <- function(lines) {
  text <- paste(lines, collapse = "\n")
  if (!nzchar(trimws(text))) stop("fedmix printed nothing on standard output", call. = FALSE)
  jsonlite::fromJSON(text, simplifyVector = FALSE)
}

# Fit a mixed-effects model across sites with fedmix
#
# See the Rd file (man/fedmix_fit.Rd).
fedmix_fit <- function(formula, sites = NULL, dataset = NULL, paths = NULL,
                       family = "gaussian", link = NULL, REML = TRUE, nAGQ = 1,
                       weights = NULL, filter = NULL,
                       fedmix = Sys.getenv("FEDMIX", "fedmix"), ...) {
  call <- match.call()
  ftext <- formula_text(formula)
  fam <- family_spec(family, link)
  src <- source_args(sites, dataset, paths)
  margs <- model_args(fam, REML, nAGQ, weights, filter)
  extra <- extra_options(list(...))
  args <- c(src$command, src$args, "--formula", ftext, margs, extra)
  json <- parse_json(run_fedmix(fedmix, c(args, "--format", "json")))
  new_fedmix_fit(json, call = call, fedmix = fedmix,
                 spec = list(command = src$command, source = src$args, formula = ftext,
                             model = margs, extra = extra, family = fam,
                             REML = isTRUE(REML) && fam$family == "gaussian"))
}

new_fedmix_fit <- function(json, call = NULL, fedmix = NULL, spec = NULL) {
  structure(list(json = json, call = call, fedmix = fedmix, spec = spec),
            class = "fedmix_fit")
}

# Build a fedmix_fit from a JSON result written by fedmix (--format json).
read_fedmix_json <- function(file) {
  json <- jsonlite::fromJSON(paste(readLines(file, warn = FALSE, encoding = "UTF-8"), collapse = "\n"),
                             simplifyVector = FALSE)
  new_fedmix_fit(json)
}
