// Every number an agent sends is checked against the model before the
// coordinator uses it, so a faulty or hostile agent ends the fit with an
// error naming it, never a crash or a silently wrong result.

import Protocol

enum ReplyChecks {
    /// Counts in a prepare answer: plausible, consistent with the model.
    static func check(_ p: PrepareReply, spec: ModelSpec, site: String) throws {
        let s = p.summary
        guard (0...1_000_000_000_000).contains(s.rows), (0...s.rows).contains(s.used) else {
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
    }

    /// A describe answer: level hashes only as asked (the request's salt,
    /// only the variables asked for, well-formed hashes, no more of them than
    /// rows). Hashes that were not asked for are dropped. An answer without
    /// hashes is accepted (an older agent): the nesting check then refuses
    /// the factors it cannot check.
    static func check(_ d: SiteDescription, asked: LevelHashRequest?, site: String) throws -> SiteDescription {
        var d = d
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
