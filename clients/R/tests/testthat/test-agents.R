test_that("fedmix_fit(sites =, dataset =) fits over site agents like fedmix local", {
  skip_without_fedmix()
  skip_on_os("windows")
  agents <- start_agents("sleepstudy", "sleepstudy")
  tryCatch({
    fit <- fedmix_fit(Reaction ~ Days + (Days | Subject), sites = agents$sites, dataset = "sleepstudy",
                      fedmix = fedmix_binary())
    local <- fedmix_fit(Reaction ~ Days + (Days | Subject), paths = case_sites("sleepstudy"),
                        fedmix = fedmix_binary())
    expect_equal(fit$spec$command, "fit")
    expect_equal(fixef(fit), fixef(local), tolerance = 1e-12)
    expect_equal(as.data.frame(VarCorr(fit)), as.data.frame(VarCorr(local)), tolerance = 1e-12)
    expect_equal(vcov(fit), vcov(local), tolerance = 1e-12)
    expect_equal(glance(fit)$n_sites, 3L)
    some <- fedmix_fit(Reaction ~ Days + (1 | Subject), sites = agents$sites, dataset = "sleepstudy",
                       filter = "Days >= 2", fedmix = fedmix_binary())
    expect_equal(nobs(some), 144L)
    err <- tryCatch(fedmix_fit(Reaction ~ Days + (1 | Subject), sites = agents$sites, dataset = "nonesuch",
                               fedmix = fedmix_binary()), error = identity)
    expect_s3_class(err, "fedmix_error")
    expect_match(conditionMessage(err), "unknown dataset")
  }, finally = stop_agents(agents))
})
