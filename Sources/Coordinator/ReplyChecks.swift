// Every number an agent sends is checked against the model before the
// coordinator uses it, so a faulty or hostile agent ends the fit with an
// error naming it, never a crash or a silently wrong result.

import Protocol
import Math

enum ReplyChecks {
    /// Counts in a prepare answer: plausible, consistent with the model.
    static func check(_ p: PrepareReply, spec: ModelSpec, site: String) throws {
        let s = p.summary
        guard (0...ProtocolLimits.maxRows).contains(s.rows), (0...s.rows).contains(s.used) else {
            throw SiteFailure(site: site, message: "reported an implausible number of rows (\(s.rows) rows, \(s.used) used)")
        }
        guard s.groups.count == spec.terms.count else {
            throw SiteFailure(site: site, message: "reported group counts for \(s.groups.count) terms; the model has \(spec.terms.count)")
        }
        guard s.groups.allSatisfy({ (0...max(s.used, 1)).contains($0) }) else {
            throw SiteFailure(site: site, message: "reported more groups than rows used")
        }
        if let c = s.columnSums, c.count != spec.fixedCount || !c.allSatisfy(\.isFinite) {
            throw SiteFailure(site: site, message: "reported column sums of the wrong shape (\(c.count) values for \(spec.fixedCount) columns)")
        }
        if let c = s.columnSquareSums, c.count != spec.fixedCount || !c.allSatisfy({ $0.isFinite && $0 >= 0 }) {
            throw SiteFailure(site: site, message: "reported column sums of squares of the wrong shape or sign")
        }
        if let l = s.logWeightSum, !l.isFinite { throw SiteFailure(site: site, message: "reported a non-finite sum of log weights") }
        if let b = p.blocks { try check(b, spec: spec, used: s.used, site: site) }
    }

    /// The θ-free sums of a site-grouped LMM: what sums of squares and
    /// cross-products of real rows must satisfy, whatever the rows. Counts
    /// agree with the sums they came with (the intercept column's sum of
    /// squares is the number of rows used, without weights), every sum of
    /// squares is ≥ 0 and every cross-product obeys Cauchy–Schwarz
    /// (|Σ a b| ≤ √(Σ a² Σ b²), a necessary condition of positive
    /// semi-definiteness). A block that fails them cannot have come from
    /// rows: the agent is broken or dishonest.
    static func check(_ b: SiteBlocks, spec: ModelSpec, used: Int, site: String) throws {
        func fail(_ why: String) -> SiteFailure {
            SiteFailure(site: site, message: "sent θ-free sums that no rows could produce (\(why)); its agent is faulty or its answers were altered", code: .inconsistentAnswer)
        }
        guard b.rows == used else { throw fail("sums over \(b.rows) rows, but \(used) rows used") }
        let w = b.width
        guard w > 0, b.ww.count == w * w, b.ww.allSatisfy(\.isFinite) else { return }   // shape: SiteBlocks.inconsistency
        // Crossed factors' columns lead [X y] (CrossedColumns at the site).
        let x0 = max(0, w - spec.fixedCount - 1), i0 = x0 * w + x0
        if spec.fixed.first?.name == "(Intercept)" {
            if spec.weights == nil, b.ww[i0] != Double(used) {
                throw fail("the intercept column's sum of squares is \(RNumberFormat.format(b.ww[i0])), not the \(used) rows used")
            }
            if spec.weights != nil, used > 0, !(b.ww[i0] > 0) { throw fail("the intercept column's weighted sum of squares is not positive") }
        }
        try psd(b.ww, w, "[X y]ᵀ[X y]", fail)
        let td = b.tailDimension
        if td > 0, b.tt.count == td * td, td <= ProtocolLimits.maxTailDimension { try psd(b.tt, td, "ZᵀZ", fail) }
        if let f = b.first, f.zz.count == f.levels * f.dimension * f.dimension {
            let r = f.dimension
            for l in 0..<f.levels { try psd(Array(f.zz[(l * r * r)..<((l + 1) * r * r)]), r, "ZᵀZ of a level", fail) }
        }
    }

    /// Diagonal ≥ 0 and Cauchy–Schwarz on every pair (relative tolerance for rounding).
    static func psd(_ m: [Double], _ n: Int, _ what: String, _ fail: (String) -> SiteFailure) throws {
        for i in 0..<n where !(m[i * n + i] >= 0) { throw fail("a diagonal entry of \(what) is negative") }
        for j in 0..<n {
            for i in 0..<j {
                let a = m[j * n + i], bound = (m[i * n + i] * m[j * n + j]).squareRoot()
                guard abs(a) <= bound * (1 + 1e-9) + 1e-300 else { throw fail("an off-diagonal entry of \(what) exceeds what its diagonal allows") }
                guard a == m[i * n + j] || abs(a - m[i * n + j]) <= 1e-12 * max(abs(a), 1) else { throw fail("\(what) is not symmetric") }
            }
        }
    }

    /// An LMM evaluation: log|L|² ≥ 0 (L Lᵀ = ΛᵀZᵀZΛ + I ⪰ I), and the
    /// Schur complement of [X y] is positive semi-definite (diagonal ≥ 0,
    /// Cauchy–Schwarz), as for any rows.
    static func check(_ c: LMMContribution, site: String) throws {
        func fail(_ why: String) -> SiteFailure {
            SiteFailure(site: site, message: "sent a contribution that no rows could produce (\(why)); its agent is faulty or its answers were altered", code: .inconsistentAnswer)
        }
        guard c.logDet.value >= -1e-9 * max(1, Double(c.rows)) else { throw fail("log|L|² = \(RNumberFormat.format(c.logDet.value)) is negative") }
        let m = c.schur.valueMatrix
        let n = m.rows
        let scale = (0..<n).map { abs(m[$0, $0]) }.max() ?? 0
        for i in 0..<n where !(m[i, i] >= -1e-9 * max(scale, 1)) { throw fail("a diagonal entry of its Schur complement is negative") }
        for j in 0..<n {
            for i in 0..<j {
                let bound = (max(m[i, i], 0) * max(m[j, j], 0)).squareRoot()
                guard abs(m[i, j]) <= bound * (1 + 1e-6) + 1e-9 * max(scale, 1) else {
                    throw fail("an off-diagonal entry of its Schur complement exceeds what its diagonal allows")
                }
            }
        }
    }

    /// A GLMM evaluation: −2 log-likelihood of counts plus ‖u‖² and log|L|²
    /// cannot be negative.
    static func check(_ j: ScalarJet, site: String) throws {
        guard j.value >= -1e-9 else {
            throw SiteFailure(site: site, message: "sent a negative −2 log-likelihood (\(RNumberFormat.format(j.value))), which no binomial or Poisson rows can give; its agent is faulty or its answers were altered", code: .inconsistentAnswer)
        }
    }

    /// A describe answer: level hashes only as asked (the request's salt,
    /// only the variables asked for, well-formed hashes, no more of them than
    /// rows). Hashes that were not asked for are dropped. An answer without
    /// hashes is accepted (an older agent): the nesting check then refuses
    /// the factors it cannot check.
    static func check(_ d: SiteDescription, asked: LevelHashRequest?, summariesAsked: Bool = false, site: String) throws -> SiteDescription {
        var d = d
        if !summariesAsked {
            // Not asked for: dropped, like hashes that were not asked for.
            for k in d.variables.indices {
                d.variables[k].nonMissing = nil; d.variables[k].mean = nil; d.variables[k].sd = nil; d.variables[k].momentsWithheld = nil
            }
        }
        for v in d.variables {
            guard v.type == .numeric || (v.nonMissing == nil && v.mean == nil) else {
                throw SiteFailure(site: site, message: "sent a count or moments of text variable \"\(v.name)\"; only numeric variables have them", code: .inconsistentAnswer)
            }
            if let n = v.nonMissing?.exactValue, let m = v.missing.exactValue, n + m != d.rows {
                throw SiteFailure(site: site, message: "sent \(n) values and \(m) missing for \"\(v.name)\" in \(d.rows) rows", code: .inconsistentAnswer)
            }
        }
        guard let asked else { d.levelHashes = nil; return d }
        guard let h = d.levelHashes else { return d }
        guard h.salt == asked.salt else { throw SiteFailure(site: site, message: "sent level hashes under another salt than the one asked for") }
        for (v, list) in h.variables {
            guard asked.variables.contains(v) else {
                throw SiteFailure(site: site, message: "sent level hashes of \"\(v)\", which were not asked for")
            }
            guard list.count <= max(d.rows, 0), list.allSatisfy(LevelHasher.isHash) else {
                throw SiteFailure(site: site, message: "sent malformed level hashes of \"\(v)\" (each must be \(LevelHasher.hexDigits) hex digits, at most one per row)")
            }
        }
        return d
    }

    /// A finalize answer carries the site-level effects (r values and r×r covariance) or nothing.
    static func check(_ f: FinalizeReply, siteLevelDimension r: Int, site: String) throws {
        switch (f.effects, f.conditionalCovariance) {
        case (nil, nil): return
        case (let e?, let c?) where e.count == r && c.count == r * r && (e + c).allSatisfy(\.isFinite):
            if let o = f.ownEffects, o.count != r || !o.allSatisfy(\.isFinite) {
                throw SiteFailure(site: site, message: "sent own estimates of the wrong shape (\(o.count) values for \(r))")
            }
            return
        default:
            throw SiteFailure(site: site, message: "sent site effects of the wrong shape (expected \(r) effects and a \(r)×\(r) covariance)")
        }
    }

    /// Dimension of the site-level random effects of a model.
    static func siteLevelDimension(_ spec: ModelSpec) -> Int {
        spec.terms.filter { $0.grouping == .site }.reduce(0) { $0 + $1.columns.count }
    }
}

/// Text from a site made safe for a terminal: ANSI escape sequences and
/// other control characters (which could rewrite what an analyst sees, e.g.
/// hide an error or fake a result line) are removed; tabs and newlines
/// become spaces.
public enum TerminalText {
    /// `clean` line by line: a multi-line report keeps its lines.
    public static func cleanLines(_ text: String) -> String {
        text.split(separator: "\n", omittingEmptySubsequences: false).map { clean(String($0)) }.joined(separator: "\n")
    }

    public static func clean(_ text: String) -> String {
        var out = String.UnicodeScalarView()
        var scalars = text.unicodeScalars.makeIterator()
        while let c = scalars.next() {
            switch c.value {
            case 0x1B:
                // ESC [ ... final byte (CSI), ESC ] ... BEL/ST (OSC), or ESC and one character.
                guard let n = scalars.next() else { break }
                if n == "[" {
                    while let x = scalars.next(), !(0x40...0x7E).contains(x.value) {}
                } else if (0x20...0x2F).contains(n.value) {
                    // ESC, intermediate bytes, final byte (e.g. ESC ( B).
                    while let x = scalars.next(), (0x20...0x2F).contains(x.value) {}
                } else if n == "]" {
                    var previous: Unicode.Scalar? = nil
                    while let x = scalars.next() {
                        if x.value == 0x07 || (previous?.value == 0x1B && x == "\\") { break }
                        previous = x
                    }
                }
            case 0x09, 0x0A, 0x0D: out.append(" ")
            case 0x00...0x1F, 0x7F, 0x80...0x9F: continue
            case 0x2028, 0x2029, 0x202A...0x202E, 0x2066...0x2069: continue   // line separators, bidi overrides
            default: out.append(c)
            }
        }
        return String(out)
    }
}
