# A factor crossed with the sites: lme4's Penicillin with the plate as the
# site and sample crossed (Tests/Fixtures/crossed, references from
# Tests/Fixtures/tools/crossed-references.R: lmer refitted tightly).
test_that("Penicillin with sample crossed with the sites: ranef as lme4's", {
  skip_without_fedmix()
  dir <- file.path(repo_root(), "Tests", "Fixtures", "crossed")
  ref <- jsonlite::fromJSON(file.path(dir, "references.json"), simplifyVector = FALSE)$penicillin_reml
  fit <- fedmix_fit(diameter ~ 1 + (1 | site) + (1 | sample), paths = file.path(dir, "penicillin"),
                    fedmix = fedmix_binary())
  expect_lt(rel_err(fixef(fit), unlist(ref$fixed$estimates)), 1e-5)

  re <- ranef(fit)
  expect_equal(sort(names(re)), c("sample", "site"))
  for (g in ref$ranef) {
    tab <- re[[g$group]]
    expect_equal(rownames(tab), unlist(g$levels))
    expect_equal(names(tab), unlist(g$columns))
    modes <- vapply(g$modes, function(m) m[[1]], 0)
    sds <- vapply(g$cond_sd, function(m) m[[1]], 0)
    # DESIGN.md: conditional modes within 1e-5 of their conditional SD, the SDs within 1e-5 relative
    expect_lt(max(abs(tab[["(Intercept)"]] - modes) / sds), 1e-5, label = g$group)
    expect_lt(rel_err(attr(tab, "cond_sd")[["(Intercept)"]], sds), 1e-5, label = g$group)
  }
  expect_output(print(re), "\\$sample")
  expect_false(any(grepl("stay at the sites", capture.output(print(re)))))
  df <- as.data.frame(re)
  expect_equal(sum(df$grpvar == "sample"), 6L)
  expect_equal(sum(df$grpvar == "site"), 24L)
  td <- tidy(fit, effects = "ran_vals")
  expect_equal(sort(unique(td$group)), c("sample", "site"))
})
