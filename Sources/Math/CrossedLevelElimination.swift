// Crossed factors level by level (DESIGN.md, "Crossed factors"), for models
// whose site-local terms are all grouped by the site, so that the
// coordinator holds every site's θ-free sums (SiteBlocks). The dense path
// (CrossedElimination) first eliminates each site's own effects, which
// couples all the crossed levels a site has: with surgeons at 20 hospitals
// it then factors a dense system of every surgeon's effects. Here, as lme4
// orders its sparse factor, the largest crossed factor F goes first: a row
// has one level of F, so its block of ΛᵀZᵀZΛ + I is block diagonal by level,
// and each level couples only to the few columns it shares rows with (the
// sites it occurs at, the other crossed factors' levels, [X y]). Eliminating
// F level by level leaves a small dense system R = [other crossed effects,
// every site's own effects, X y]:
//     L_l L_lᵀ = D_l,  V_l = L_l⁻¹ B_l,  C ← C − Σ_l V_lᵀ V_l,
//     then L_R L_Rᵀ = C_uu, [[A, g], [gᵀ, s]] = C_ww − (L_R⁻¹C_uw)ᵀ(L_R⁻¹C_uw),
//     ℓ = Σ_l log|L_l|² + log|L_R|²,
// the same totals as the dense path, with exact jets in the whole θ, for a
// cost linear in F's levels.

/// The level-by-level elimination of the largest crossed factor.
public enum CrossedLevelElimination {
    /// One level of the eliminated factor after elimination.
    public struct Level: Sendable {
        /// R indices the level couples to (ascending; [X y] columns included).
        public var columns: [Int]
        /// L_l (r × r) and V_l = L_l⁻¹ B_l (r × columns.count).
        public var factor: JetMatrix
        public var coupling: JetMatrix
    }

    public struct Result: Sendable {
        public var totals: LMMTotals
        public var levels: [Level]
        /// L_R over R's random-effects part, and L_R⁻¹ C_uw.
        public var restFactor: JetMatrix
        public var restCross: JetMatrix
        /// Where everything sits (see `Plan`).
        public var plan: Plan
    }

    /// The index plan: F, and R's column groups with their factor blocks.
    public struct Plan: Sendable {
        /// Index into layout.factors of the factor eliminated level by level.
        public var first: Int
        public var firstDimension: Int
        /// For each u_G index not in F: its R index (−1 for F's own).
        public var restIndexOfG: [Int]
        /// For each site, the R index of its own effects (its tail).
        public var siteTailStart: [Int]
        /// R's random-effects part: d_u; [X y] follow it.
        public var randomDimension: Int
        public var width: Int
        /// R's column groups: start, width, and the factor block that scales
        /// them (crossed factor index in the model's structure, or a site's
        /// tail factor in the local structure; nil for [X y]).
        public var groups: [(start: Int, width: Int, block: Block?)]
        public enum Block: Sendable { case crossed(Int), local(Int) }
        public var groupOfColumn: [Int]
        /// Per site, its own effects as columns of R whose couplings the
        /// site sends at each θ (`virtualSums`); empty when every site's
        /// own effects come from its θ-free sums.
        public var virtualWidths: [Int] = []
    }

    /// Whether every site's sums are a dense tail (all local terms grouped by
    /// the site), which this path needs.
    public static func applies(_ blocks: [SiteBlocks], layout: CrossedLayout) -> Bool {
        !layout.factors.isEmpty && blocks.allSatisfy { $0.first == nil && $0.nested == nil }
    }

    /// Whether this path does less floating-point work than the dense one:
    /// each level couples to the sites it occurs at (their own effects), the
    /// other crossed effects and [X y], then R is factored; the dense path
    /// factors all q_G + w columns.
    public static func cheaper(_ blocks: [SiteBlocks], layout: CrossedLayout, structure: CovarianceStructure) -> Bool {
        guard applies(blocks, layout: layout) else { return false }
        let w = Double(blocks[0].width - layout.siteColumns[0].count)
        let f = layout.factors.max { $0.levels * structure.factorDimension($0.factor) < $1.levels * structure.factorDimension($1.factor) }!
        let q1 = Double(f.levels * structure.factorDimension(f.factor)), q = Double(layout.dimension)
        let tails = Double(blocks.reduce(0) { $0 + $1.tailDimension })
        let sitesPerLevel = Double(layout.siteColumns.reduce(0) { $0 + $1.count }) / max(1, q)
        let coupling = sitesPerLevel * tails / Double(blocks.count) + (q - q1) + w
        let rest = q - q1 + tails + w
        let byLevel: Double = q1 * coupling * coupling + rest * rest * rest / 3
        let dense: Double = (q + w) * (q + w) * (q + w) / 3
        return byLevel < dense
    }

    static func plan(_ blocks: [SiteBlocks], layout: CrossedLayout, structure: CovarianceStructure,
                     localStructure: CovarianceStructure, virtualWidths: [Int] = []) -> Plan {
        let firstIndex = layout.factors.indices.max { a, b in
            let fa = layout.factors[a], fb = layout.factors[b]
            return fa.levels * structure.factorDimension(fa.factor) < fb.levels * structure.factorDimension(fb.factor)
        }!
        let first = layout.factors[firstIndex]
        let r1 = structure.factorDimension(first.factor)
        var groups: [(start: Int, width: Int, block: Plan.Block?)] = []
        var restIndexOfG = [Int](repeating: -1, count: layout.dimension)
        var next = 0
        for (c, f) in layout.factors.enumerated() where c != firstIndex {
            let r = structure.factorDimension(f.factor)
            for l in 0..<f.levels {
                groups.append((next, r, .crossed(f.factor)))
                for a in 0..<r { restIndexOfG[f.offset + l * r + a] = next + a }
                next += r
            }
        }
        var siteTailStart: [Int] = []
        for (k, b) in blocks.enumerated() {
            siteTailStart.append(next)
            if !virtualWidths.isEmpty {
                // Identity-scaled: the site's couplings come already scaled.
                groups.append((next, virtualWidths[k], nil))
                next += virtualWidths[k]
                continue
            }
            for t in b.tail {
                let r = localStructure.factorDimension(t.factor)
                for l in 0..<t.levels { groups.append((next + t.offset + l * r, r, .local(t.factor))) }
            }
            next += b.tailDimension
        }
        let w = blocks[0].width - layout.siteColumns[0].count
        groups.append((next, w, nil))
        var groupOfColumn = [Int](repeating: 0, count: next + w)
        for (g, grp) in groups.enumerated() { for j in grp.start..<(grp.start + grp.width) { groupOfColumn[j] = g } }
        return Plan(first: firstIndex, firstDimension: r1, restIndexOfG: restIndexOfG, siteTailStart: siteTailStart,
                    randomDimension: next, width: w, groups: groups, groupOfColumn: groupOfColumn, virtualWidths: virtualWidths)
    }

    /// The sites' θ-free sums in the elimination's order, taken once per fit.
    public struct Sums: Sendable {
        public var plan: Plan
        public var rows: Int
        /// Per level of F: Σ zzᵀ (r × r).
        var diagonal: [Matrix]
        /// Per level: the column groups of R it shares rows with, and the
        /// unscaled block (r × their columns) in that order.
        var coupledGroups: [[Int]]
        var coupling: [Matrix]
        /// R's nonzero blocks between column groups (g, h), unscaled.
        var restBlocks: [(g: Int, h: Int, block: Matrix)]
    }

    /// The sums of `blocks` in the new order, or nil when a level of the
    /// first factor shares rows with another of its levels (never for data:
    /// a row has one level), so the dense path must be taken.
    public static func sums(_ blocks: [SiteBlocks], layout: CrossedLayout, structure: CovarianceStructure,
                            localStructure: CovarianceStructure) -> Sums? {
        sums(blocks, layout: layout, structure: structure, localStructure: localStructure, virtualWidths: [])
    }

    /// The sums of models with within-site terms: each site's θ-free
    /// A_k = [Z_G X y]ᵀ[Z_G X y] (`blocks`, no tail), its m_k own effects
    /// (`virtualWidths`) left as columns whose couplings V_k each
    /// evaluation brings (CrossedLowRank.swift, `combine(_:virtual:…)`).
    public static func sums(crossedSums blocks: [SiteBlocks], virtualWidths: [Int], layout: CrossedLayout,
                            structure: CovarianceStructure, localStructure: CovarianceStructure) -> Sums? {
        precondition(virtualWidths.count == blocks.count && blocks.allSatisfy { $0.tailDimension == 0 && $0.first == nil },
                     "a site's A_k has no own effects; one width per site")
        return sums(blocks, layout: layout, structure: structure, localStructure: localStructure, virtualWidths: virtualWidths)
    }

    static func sums(_ blocks: [SiteBlocks], layout: CrossedLayout, structure: CovarianceStructure,
                     localStructure: CovarianceStructure, virtualWidths: [Int]) -> Sums? {
        precondition(blocks.count == layout.siteColumns.count, "one set of sums per site")
        let plan = plan(blocks, layout: layout, structure: structure, localStructure: localStructure, virtualWidths: virtualWidths)
        let first = layout.factors[plan.first], r1 = plan.firstDimension
        let dR = plan.randomDimension + plan.width
        // The unscaled sums in the new order, site by site (in site order).
        var d0 = [Double](repeating: 0, count: first.levels * r1 * r1)
        var e0 = [[Double]](repeating: [], count: first.levels)     // r1 × dR per level, column-major
        var c0 = [Double](repeating: 0, count: dR * dR)
        enum Place { case first(level: Int, component: Int), rest(Int) }
        for (k, b) in blocks.enumerated() {
            let cols = layout.siteColumns[k], lead = cols.count, width = b.width, td = b.tailDimension
            let place: [Place] = (0..<width).map { a in
                if a >= lead { return .rest(plan.randomDimension + a - lead) }
                let g = cols[a]
                if plan.restIndexOfG[g] >= 0 { return .rest(plan.restIndexOfG[g]) }
                let o = g - first.offset
                return .first(level: o / r1, component: o % r1)
            }
            let tailStart = plan.siteTailStart[k]
            func addFirstRest(_ level: Int, _ c: Int, _ j: Int, _ v: Double) {
                if e0[level].isEmpty { e0[level] = [Double](repeating: 0, count: r1 * dR) }
                e0[level][c + j * r1] += v
            }
            for j in 0..<width {
                for i in 0..<width {
                    let v = b.ww[i + j * width]
                    switch (place[i], place[j]) {
                    case let (.first(li, ci), .first(lj, cj)):
                        if li == lj { d0[li * r1 * r1 + ci + cj * r1] += v } else if v != 0 { return nil }
                    case let (.first(li, ci), .rest(rj)): addFirstRest(li, ci, rj, v)
                    case (.rest, .first): break   // the transpose of the case above
                    case let (.rest(ri), .rest(rj)): c0[ri + rj * dR] += v
                    }
                }
            }
            for a in 0..<width {
                for t in 0..<td {
                    let v = b.tw[t + a * td]
                    switch place[a] {
                    case let .first(l, c): addFirstRest(l, c, tailStart + t, v)
                    case let .rest(r): c0[tailStart + t + r * dR] += v; c0[r + (tailStart + t) * dR] += v
                    }
                }
            }
            for j in 0..<td { for i in 0..<td { c0[tailStart + i + (tailStart + j) * dR] += b.tt[i + j * td] } }
        }
        var coupledGroups: [[Int]] = [], coupling: [Matrix] = []
        for l in 0..<first.levels {
            var groups: [Int] = []
            if !e0[l].isEmpty {
                for (g, grp) in plan.groups.enumerated() {
                    var any = false
                    for j in grp.start..<(grp.start + grp.width) { for a in 0..<r1 where e0[l][a + j * r1] != 0 { any = true } }
                    if any { groups.append(g) }
                }
            }
            let width = groups.reduce(0) { $0 + plan.groups[$1].width }
            var block = Matrix(rows: r1, cols: width)
            var at = 0
            for g in groups {
                let grp = plan.groups[g]
                for j in 0..<grp.width { for a in 0..<r1 { block[a, at + j] = e0[l][a + (grp.start + j) * r1] } }
                at += grp.width
            }
            coupledGroups.append(groups)
            coupling.append(block)
        }
        var restBlocks: [(g: Int, h: Int, block: Matrix)] = []
        for (h, gh) in plan.groups.enumerated() {
            for (g, gg) in plan.groups.enumerated() {
                var block = Matrix(rows: gg.width, cols: gh.width)
                var any = false
                for j in 0..<gh.width { for i in 0..<gg.width {
                    let v = c0[gg.start + i + (gh.start + j) * dR]
                    if v != 0 { block[i, j] = v; any = true }
                } }
                if any { restBlocks.append((g, h, block)) }
            }
        }
        return Sums(plan: plan, rows: blocks.reduce(0) { $0 + $1.rows },
                    diagonal: (0..<first.levels).map { l in Matrix(rows: r1, cols: r1, data: Array(d0[(l * r1 * r1)..<((l + 1) * r1 * r1)])) },
                    coupledGroups: coupledGroups, coupling: coupling, restBlocks: restBlocks)
    }

    /// The pooled totals at θ (the whole model's) from the sites' sums; nil
    /// as `sums` says.
    public static func combine(_ blocks: [SiteBlocks], layout: CrossedLayout, structure: CovarianceStructure,
                               localStructure: CovarianceStructure, theta: [Double], order: Int) throws -> Result? {
        guard let sums = sums(blocks, layout: layout, structure: structure, localStructure: localStructure) else { return nil }
        return try combine(sums, layout: layout, structure: structure, localStructure: localStructure, theta: theta, order: order)
    }

    /// The pooled totals at θ from sums taken once.
    public static func combine(_ sums: Sums, layout: CrossedLayout, structure: CovarianceStructure,
                               localStructure: CovarianceStructure, theta: [Double], order: Int) throws -> Result {
        try combine(sums, virtual: nil, layout: layout, structure: structure, localStructure: localStructure, theta: theta, order: order)
    }

    /// The pooled totals at θ from sums taken once and, for a model with
    /// within-site terms, each site's V_kᵀ at θ (its own effects' rows,
    /// jets in the local θ; LMMSite.lowRank), in site order: the site's own
    /// effects are then R's columns with an identity block and couplings
    /// Λ_GᵀV_k to its crossed levels and V_k to [X y]. Eliminating them
    /// first would give each site's A_k − V_kV_kᵀ, the dense path's input,
    /// so the totals are the dense path's.
    public static func combine(_ sums: Sums, virtual: [LMMLowRankContribution]?, layout: CrossedLayout,
                               structure: CovarianceStructure, localStructure: CovarianceStructure,
                               theta: [Double], order: Int) throws -> Result {
        precondition((virtual?.count ?? 0) == sums.plan.virtualWidths.count, "one V_k per site exactly when the sums have virtual columns")
        let plan = sums.plan
        let first = layout.factors[plan.first], r1 = plan.firstDimension
        let dR = plan.randomDimension + plan.width, du = plan.randomDimension
        let m = structure.thetaCount
        let space = JetSpace(parameters: m, order: order)
        let jw = space.width
        let globalMap = Array(0..<m)
        let localTheta = layout.localTheta.map { theta[$0] }
        let localMap = (0..<m).map { layout.localTheta.firstIndex(of: $0) ?? -1 }
        var blockCache: [String: JetMatrix] = [:]
        func jet(_ block: Plan.Block) -> JetMatrix {
            switch block {
            case .crossed(let f):
                if let j = blockCache["c\(f)"] { return j }
                let j = structure.factorJet(f, theta: theta, space: space, parameterMap: globalMap)
                blockCache["c\(f)"] = j
                return j
            case .local(let f):
                if let j = blockCache["l\(f)"] { return j }
                let j = localStructure.factorJet(f, theta: localTheta, space: space, parameterMap: localMap)
                blockCache["l\(f)"] = j
                return j
            }
        }
        let t1 = jet(.crossed(first.factor))

        // C = Λ_Rᵀ C0 Λ_R (+ I on the random part), block by block.
        var c = JetMatrix(rows: dR, cols: dR, space: space)
        for (g, h, block) in sums.restBlocks {
            let gg = plan.groups[g], gh = plan.groups[h]
            let scaled = scale(block, left: gg.block.map(jet), right: gh.block.map(jet), space: space)
            for j in 0..<gh.width { for i in 0..<gg.width {
                let s = scaled.offset(i, j), d = c.offset(gg.start + i, gh.start + j)
                for x in 0..<jw { c.storage[d + x] = scaled.storage[s + x] }
            } }
        }
        for i in 0..<du { c.storage[c.offset(i, i)] += 1 }

        var logDet = ScalarJet(space: space)
        let kernel = JetKernel(space)
        // The sites' own effects as columns: V_kᵀ in all of θ with its
        // crossed columns scaled (V_kᵀΛ_G); they couple to R here and to F's
        // levels in the loop below (`levelSites`).
        var virtualRows: [JetMatrix] = []
        var levelSites = [[(site: Int, column: Int)]](repeating: [], count: first.levels)
        for (k, part) in (virtual ?? []).enumerated() {
            var vt = part.factor.lifted(to: space, map: layout.localTheta)
            logDet.addLifted(part.logDet, map: layout.localTheta)
            let cols = layout.siteColumns[k], lead = cols.count, mk = vt.rows, start = plan.siteTailStart[k]
            precondition(mk == plan.virtualWidths[k] && vt.cols == lead + plan.width, "V_k of the site's shape")
            var a = 0
            while a < lead {
                let g = cols[a]
                let f = layout.factors.first { g >= $0.offset && g < $0.offset + $0.levels * structure.factorDimension($0.factor) }!
                let r = structure.factorDimension(f.factor)
                vt.scaleColumns(a..<(a + r), by: jet(.crossed(f.factor)), kernel: kernel)
                if f.offset == first.offset { levelSites[(g - first.offset) / r1].append((k, a)) }
                a += r
            }
            for e in 0..<mk {
                for a in 0..<lead where plan.restIndexOfG[cols[a]] >= 0 {
                    c.add(vt, from: (e, a), symmetricAt: (start + e, plan.restIndexOfG[cols[a]]))
                }
                for j in 0..<plan.width { c.add(vt, from: (e, lead + j), symmetricAt: (start + e, du + j)) }
            }
            virtualRows.append(vt)
        }
        var levels: [Level] = []
        levels.reserveCapacity(first.levels)
        for l in 0..<first.levels {
            var dl = scale(sums.diagonal[l], left: t1, right: t1, space: space)
            dl.addToDiagonal(1)
            try dl.choleskyInPlace()
            let ld = dl.sumLogDiagonal(scale: 2)
            for x in 0..<jw { logDet.storage[x] += ld.storage[x] }
            // The groups this level shares rows with, scaled: V = T_Fᵀ B Λ_groups.
            let coupled = sums.coupledGroups[l], block = sums.coupling[l]
            var columns: [Int] = []
            for g in coupled { let grp = plan.groups[g]; columns.append(contentsOf: grp.start..<(grp.start + grp.width)) }
            // The sites' own effects this level meets go before [X y], in site order.
            let wAt = columns.firstIndex { $0 >= du } ?? columns.count
            var own: [Int] = []
            for (k, _) in levelSites[l] { own.append(contentsOf: plan.siteTailStart[k]..<(plan.siteTailStart[k] + plan.virtualWidths[k])) }
            columns.insert(contentsOf: own, at: wAt)
            func position(_ j: Int) -> Int { j < wAt ? j : j + own.count }
            var v = JetMatrix(rows: r1, cols: columns.count, space: space)
            var at = 0
            for g in coupled {
                let grp = plan.groups[g]
                var part = Matrix(rows: r1, cols: grp.width)
                for j in 0..<grp.width { for a in 0..<r1 { part[a, j] = block[a, at + j] } }
                let scaled = scale(part, left: t1, right: grp.block.map(jet), space: space)
                for j in 0..<grp.width { for a in 0..<r1 {
                    let s = scaled.offset(a, j), d = v.offset(a, position(at + j))
                    for x in 0..<jw { v.storage[d + x] = scaled.storage[s + x] }
                } }
                at += grp.width
            }
            // (T_Fᵀ V_k) at the level's rows: the scaled V_kᵀ, transposed.
            var ownAt = wAt
            for (k, column) in levelSites[l] {
                let vt = virtualRows[k]
                for e in 0..<vt.rows { for a in 0..<r1 {
                    let s = vt.offset(e, column + a), d = v.offset(a, ownAt + e)
                    for x in 0..<jw { v.storage[d + x] = vt.storage[s + x] }
                } }
                ownAt += vt.rows
            }
            if !columns.isEmpty && virtual != nil {
                // With the sites' own effects as columns, levels meet ~50 columns: the upper triangle, by a fixed-width kernel.
                v.solveLowerInPlace(dl)
                subtractGramUpper(&c.storage, v.storage, columns: columns, r: r1, n: dR, space: space)
            } else if !columns.isEmpty {
                v.solveLowerInPlace(dl)
                // C[cols, cols] −= VᵀV.
                v.storage.withUnsafeBufferPointer { vp in
                    c.storage.withUnsafeMutableBufferPointer { cp in
                        let V = vp.baseAddress!, C = cp.baseAddress!
                        for (bj, j) in columns.enumerated() {
                            for (ai, i) in columns.enumerated() {
                                let dst = C + (i + j * dR) * jw
                                for a in 0..<r1 { kernel.mulAdd(dst, V + (a + ai * r1) * jw, V + (a + bj * r1) * jw, -1) }
                            }
                        }
                    }
                }
            }
            levels.append(Level(columns: columns, factor: dl, coupling: v))
        }

        if virtual != nil { mirrorUpper(&c) }
        var cuu = JetMatrix(rows: du, cols: du, space: space)
        var cuw = JetMatrix(rows: du, cols: plan.width, space: space)
        var cww = JetMatrix(rows: plan.width, cols: plan.width, space: space)
        CrossedElimination.copy(c, rows: 0..<du, cols: 0..<du, into: &cuu)
        CrossedElimination.copy(c, rows: 0..<du, cols: du..<dR, into: &cuw)
        CrossedElimination.copy(c, rows: du..<dR, cols: du..<dR, into: &cww)
        if du > 0 {
            try CrossedElimination.choleskyRowwise(&cuu)
            cuw.solveLowerInPlace(cuu)
            cww.addProduct(cuw, transposeA: true, cuw, sign: -1)
            let lr = cuu.sumLogDiagonal(scale: 2)
            for x in 0..<jw { logDet.storage[x] += lr.storage[x] }
        }
        return Result(totals: LMMTotals(schur: cww, logDet: logDet, rows: sums.rows), levels: levels,
                      restFactor: cuu, restCross: cuw, plan: plan)
    }

    /// op(left)ᵀ · block · right for constant `block`, either side possibly
    /// the identity (nil).
    static func scale(_ block: Matrix, left: JetMatrix?, right: JetMatrix?, space: JetSpace) -> JetMatrix {
        var inner = JetMatrix(rows: block.rows, cols: block.cols, space: space)
        if let right { inner.addProduct(constant: block, right) } else { inner = JetMatrix(constant: block, space: space) }
        guard let left else { return inner }
        var out = JetMatrix(rows: block.rows, cols: block.cols, space: space)
        out.addProduct(left, transposeA: true, inner)
        return out
    }

    /// The crossed effects' conditional modes b_G = Λ_G u_G and
    /// P = Λ_G [(ΛᵀZᵀZΛ + I)⁻¹]_GG Λ_Gᵀ (σ² P is their conditional
    /// covariance), from an order-0 `combine` at the result's θ.
    public static func modes(_ r: Result, layout: CrossedLayout, structure: CovarianceStructure, theta: [Double],
                             beta: [Double]) -> (effects: [Double], covariance: Matrix) {
        let plan = r.plan, first = layout.factors[plan.first], r1 = plan.firstDimension
        let du = plan.randomDimension, p = beta.count, q = layout.dimension
        // Right-hand sides after elimination: z = V[:, y] − V[:, X] β.
        func reduced(_ m: Matrix, colOf: (Int) -> Int?) -> [Double] {
            (0..<m.rows).map { i in
                var v = colOf(p).map { m[i, $0] } ?? 0
                for j in 0..<p { if let c = colOf(j) { v -= m[i, c] * beta[j] } }
                return v
            }
        }
        let lr = r.restFactor.valueMatrix
        let zr = reduced(r.restCross.valueMatrix) { $0 }
        let ur = du > 0 ? Dense.solveLowerTranspose(lr, zr) : []
        var u = [Double](repeating: 0, count: q)
        for g in 0..<q where plan.restIndexOfG[g] >= 0 { u[g] = ur[plan.restIndexOfG[g]] }
        // Y_l = L_l⁻ᵀ V_l over R's random columns, for the modes and P.
        var ys: [(cols: [Int], y: Matrix, inv: Matrix)] = []
        for (l, level) in r.levels.enumerated() {
            let v = level.coupling.valueMatrix, ll = level.factor.valueMatrix
            let randomAt = level.columns.enumerated().filter { $0.element < du }
            var z = reduced(v) { j in level.columns.firstIndex(of: du + j) }
            for (a, col) in randomAt { for i in 0..<r1 { z[i] -= v[i, a] * ur[col] } }
            let ul = Dense.solveLowerTranspose(ll, z)
            for i in 0..<r1 { u[first.offset + l * r1 + i] = ul[i] }
            var y = Matrix(rows: r1, cols: randomAt.count)
            for (k, (a, _)) in randomAt.enumerated() {
                let col = Dense.solveLowerTranspose(ll, (0..<r1).map { v[$0, a] })
                for i in 0..<r1 { y[i, k] = col[i] }
            }
            ys.append((randomAt.map(\.element), y, Dense.inverseFromCholesky(ll)))
        }
        // [A⁻¹]: S⁻¹ on R; −W between F and R with W = Y S⁻¹ (rows: F's
        // effects); (L_l L_lᵀ)⁻¹ + W_l Y_mᵀ between F's levels l and m.
        let sinv = du > 0 ? Dense.inverseFromCholesky(lr) : Matrix(rows: 0, cols: 0)
        let q1 = first.levels * r1, o1 = first.offset
        var w = [Double](repeating: 0, count: q1 * du)   // column-major q1 × du
        for (l, yl) in ys.enumerated() {
            for c in 0..<du { for (k, col) in yl.cols.enumerated() {
                let s = sinv[col, c]
                for i in 0..<r1 { w[l * r1 + i + c * q1] += yl.y[i, k] * s }
            } }
        }
        var ainv = Matrix(rows: q, cols: q)
        let restOfG = plan.restIndexOfG
        let rest = (0..<q).filter { restOfG[$0] >= 0 }
        ainv.data.withUnsafeMutableBufferPointer { ap in
            w.withUnsafeBufferPointer { wp in
                let A = ap.baseAddress!, W = wp.baseAddress!
                for j in rest {
                    for i in rest { A[i + j * q] = sinv[restOfG[i], restOfG[j]] }
                    let wc = W + restOfG[j] * q1
                    for i in 0..<q1 { A[o1 + i + j * q] = -wc[i]; A[j + (o1 + i) * q] = -wc[i] }
                }
                for (m, ym) in ys.enumerated() {
                    for b in 0..<r1 {
                        let column = A + (o1 + m * r1 + b) * q + o1
                        for (k, col) in ym.cols.enumerated() {
                            let coefficient = ym.y[b, k], wc = W + col * q1
                            for i in 0..<q1 { column[i] += wc[i] * coefficient }
                        }
                        for a in 0..<r1 { column[m * r1 + a] += ym.inv[a, b] }
                    }
                }
            }
        }
        return CrossedElimination.scaled(modes: u, inverse: ainv, layout: layout, structure: structure, theta: theta)
    }
}
