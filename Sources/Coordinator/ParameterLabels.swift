import Protocol

extension ModelSpec {
    /// θ in the order the optimizer sees it (the spec's term order), named
    /// for people: "θ site (Intercept)", "θ Subject Days:(Intercept)".
    var thetaLabels: [String] {
        terms.flatMap { t in
            (0..<t.columns.count).flatMap { j in
                (j..<t.columns.count).map { i in
                    i == j ? "θ \(t.name) \(t.columns[i].name)" : "θ \(t.name) \(t.columns[i].name):\(t.columns[j].name)"
                }
            }
        }
    }
}
