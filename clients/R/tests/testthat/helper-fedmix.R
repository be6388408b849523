# Where the fedmix executable and the repository's reference fixtures are.
# FEDMIX: the executable (else .build/debug/fedmix at the repository's top);
# FEDMIX_REPO: the repository (else found by looking upwards from here, which
# works for tests run in clients/R/tests/testthat but not under R CMD check,
# whose tests run in a copy: CI sets both variables).

repo_root <- function() {
  env <- Sys.getenv("FEDMIX_REPO")
  if (nzchar(env)) return(if (dir.exists(env)) normalizePath(env) else NULL)
  dir <- normalizePath(getwd())
  repeat {
    if (file.exists(file.path(dir, "Package.swift")) &&
        dir.exists(file.path(dir, "Tests", "Fixtures", "reference"))) return(dir)
    parent <- dirname(dir)
    if (parent == dir) return(NULL)
    dir <- parent
  }
}

fedmix_binary <- function() {
  env <- Sys.getenv("FEDMIX")
  if (nzchar(env)) return(if (file.exists(env)) normalizePath(env) else NULL)
  root <- repo_root()
  if (is.null(root)) return(NULL)
  exe <- file.path(root, ".build", "debug", "fedmix")
  if (file.exists(exe)) exe else NULL
}

skip_without_fedmix <- function() {
  if (is.null(fedmix_binary()))
    skip("no fedmix executable: set FEDMIX to .build/debug/fedmix (swift build) or run inside the repository")
  if (is.null(repo_root()))
    skip("no reference fixtures: set FEDMIX_REPO to the fedmix repository")
}

case_dir <- function(case) file.path(repo_root(), "Tests", "Fixtures", "reference", case)

# One CSV per site: the case's sites/ folder, else pooled.csv split by its site column.
case_sites <- function(case) {
  sites <- file.path(case_dir(case), "sites")
  if (dir.exists(sites) && length(list.files(sites, pattern = "[.]csv$"))) return(sites)
  pooled <- utils::read.csv(file.path(case_dir(case), "pooled.csv"), check.names = FALSE,
                            colClasses = "character")
  out <- file.path(tempdir(), paste0("fedmix-", case))
  dir.create(out, showWarnings = FALSE)
  for (s in unique(pooled$site))
    utils::write.csv(pooled[pooled$site == s, , drop = FALSE], file.path(out, paste0(s, ".csv")),
                     row.names = FALSE)
  out
}

reference <- function(case, fit) {
  jsonlite::fromJSON(file.path(case_dir(case), "reference.json"), simplifyVector = FALSE)$fits[[fit]]
}

# lme4 refitted at tight tolerances (Tests/Fixtures/reference-tight*.json)
tight <- function(file, key) {
  jsonlite::fromJSON(file.path(repo_root(), "Tests", "Fixtures", file), simplifyVector = FALSE)[[key]]
}

ref_fixef <- function(ref) {
  stats::setNames(vapply(ref$fixed_effects, function(e) e$estimate, 0),
                  vapply(ref$fixed_effects, function(e) e$name, ""))
}
ref_se <- function(ref) vapply(ref$fixed_effects, function(e) e$std_error, 0)
ref_varcorr <- function(ref) {
  vc <- ref$variance_components
  data.frame(grp = vapply(vc, function(v) v$grp, ""),
             var1 = vapply(vc, function(v) if (is.null(v$var1)) NA_character_ else v$var1, ""),
             var2 = vapply(vc, function(v) if (is.null(v$var2)) NA_character_ else v$var2, ""),
             vcov = vapply(vc, function(v) v$vcov, 0),
             sdcor = vapply(vc, function(v) v$sdcor, 0), stringsAsFactors = FALSE)
}

# max relative difference
rel_err <- function(a, b) max(abs(unname(a) - unname(b)) / pmax(abs(unname(b)), 1e-8))

# A stand-in fedmix: `compare` and `--confint` answer from files (as the
# interfaces being added to fedmix will), everything else goes to the real one.
mock_fedmix <- function(compare_json = NULL, confint_json = NULL) {
  dir <- tempfile("mock-fedmix-")
  dir.create(dir)
  args_file <- file.path(dir, "args")
  script <- file.path(dir, "fedmix")
  writeLines(c(
    "#!/bin/sh",
    sprintf("real='%s'", fedmix_binary()),
    sprintf("printf '%%s\\n' \"$@\" > '%s'", args_file),
    "if [ \"$1\" = compare ]; then",
    "  if [ \"$2\" = --help ]; then echo 'Usage: fedmix compare ...'; exit 0; fi",
    if (is.null(compare_json)) "  echo 'fedmix: unknown command \"compare\"' >&2; exit 64" else sprintf("  cat '%s'; exit 0", compare_json),
    "fi",
    "if [ \"$2\" = --help ]; then \"$real\" \"$@\"; echo '  --confint METHOD  profile or wald'; exit 0; fi",
    "for a in \"$@\"; do",
    "  if [ \"$a\" = --confint ]; then",
    if (is.null(confint_json)) "    echo 'fedmix: unknown option --confint' >&2; exit 64" else sprintf("    cat '%s'; exit 0", confint_json),
    "  fi",
    "done",
    "exec \"$real\" \"$@\""), script)
  Sys.chmod(script, "0755")
  list(path = script, args = function() readLines(args_file))
}

# Site agents on loopback, one per CSV of a case (certificates from fedmix
# certs); returns the sites file and the agents' process ids.
start_agents <- function(case, dataset) {
  exe <- fedmix_binary()
  agent <- file.path(dirname(exe), "fedmix-agent")
  if (!file.exists(agent)) skip("no fedmix-agent next to the fedmix executable")
  dir <- tempfile("fedmix-agents-")
  dir.create(dir)
  run <- function(...) {
    status <- system2(exe, shQuote(c(...)), stdout = FALSE, stderr = FALSE)
    if (status != 0L) stop("fedmix ", paste(c(...), collapse = " "), " failed")
  }
  run("certs", "init", file.path(dir, "ca"))
  run("certs", "issue", "--ca", file.path(dir, "ca"), "--name", "coordinator", "--out", file.path(dir, "coord"))
  csvs <- list.files(case_sites(case), pattern = "[.]csv$", full.names = TRUE)
  base <- 20000L + sample.int(30000L, 1L)
  pids <- integer()
  entries <- list()
  for (k in seq_along(csvs)) {
    site <- sub("[.]csv$", "", basename(csvs[k]))
    port <- base + k
    run("certs", "issue", "--ca", file.path(dir, "ca"), "--name", "localhost", "--out", file.path(dir, site))
    config <- list(site = site, listen = sprintf("127.0.0.1:%d", port),
                   tls = list(certificate = file.path(dir, site, "cert.pem"), key = file.path(dir, site, "key.pem"),
                              ca = file.path(dir, "ca", "ca.pem"), allowed_coordinators = list("coordinator")),
                   datasets = stats::setNames(list(list(csv = normalizePath(csvs[k]))), dataset),
                   audit_log = file.path(dir, paste0(site, "-audit.db")))
    cfile <- file.path(dir, paste0(site, ".json"))
    writeLines(jsonlite::toJSON(config, auto_unbox = TRUE), cfile)
    log <- file.path(dir, paste0(site, ".log"))
    pid <- system2("sh", c("-c", shQuote(sprintf("%s serve --config %s > %s 2>&1 & echo $!",
                                                 shQuote(agent), shQuote(cfile), shQuote(log)))), stdout = TRUE)
    pids <- c(pids, as.integer(pid))
    entries[[k]] <- list(name = site, address = sprintf("127.0.0.1:%d", port), server_name = "localhost")
    for (i in 1:100) {
      if (file.exists(log) && any(grepl("listening", readLines(log, warn = FALSE)))) break
      Sys.sleep(0.1)
    }
  }
  sites <- file.path(dir, "sites.json")
  writeLines(jsonlite::toJSON(list(tls = list(certificate = file.path(dir, "coord", "cert.pem"),
                                              key = file.path(dir, "coord", "key.pem"),
                                              ca = file.path(dir, "ca", "ca.pem")),
                                   sites = entries), auto_unbox = TRUE), sites)
  list(sites = sites, pids = pids, dir = dir)
}

stop_agents <- function(agents) {
  for (pid in agents$pids) tools::pskill(pid)
}
