library(testthat)
library(fedmix)

test_check("fedmix")
