// The level hashes a describe request may ask for: keyed hashes of the codes
// of a model's grouping variables, so that the coordinator can check that a
// factor is nested in the sites however many levels it has. What they reveal
// and the rules below: docs/PRIVACY.md, "Level hashes".

import Protocol
import Synchronization

extension SiteService {
    /// Most variables one request may ask to hash.
    static let maxHashedVariables = 20

    /// The hashes of each requested variable's distinct codes over all rows of
    /// the dataset. Rules: a fresh salt (never one this agent answered
    /// before); at most `maxHashedVariables` variables; only variables the
    /// site allows and has; only text or whole numbers (codes), never
    /// measurements with fractional values, whose sets of values would tell
    /// their extremes. Filters, complete cases and counts play no part, so a
    /// hash list says nothing about which rows a model uses.
    func levelHashes(_ r: LevelHashRequest, table: DataTable) throws -> LevelHashes {
        guard r.variables.count <= Self.maxHashedVariables else {
            throw SiteError.invalid("level hashes of at most \(Self.maxHashedVariables) variables may be asked for at once")
        }
        do { _ = try LevelHasher(salt: r.salt, variable: "") } catch {
            throw SiteError.invalid("the level-hash salt must be \(LevelHasher.saltHexDigits.lowerBound) to \(LevelHasher.saltHexDigits.upperBound) hexadecimal digits")
        }
        guard levelHashSalts.insert(r.salt.lowercased()) else {
            throw SiteError.disclosure("this level-hash salt was used before; hash lists under one salt could be matched across requests, so every request must bring a fresh random salt (rule: one salt, one answer)")
        }
        var out: [String: [String]] = [:]
        for v in Set(r.variables) where mayUse(v) {
            guard let column = table.column(named: v), let codes = Self.codes(column) else { continue }
            out[v] = try LevelHasher(salt: r.salt, variable: v).hashes(codes)
        }
        return LevelHashes(salt: r.salt, variables: out)
    }

    /// The distinct non-missing codes of a column as a grouping factor reads
    /// them (numbers as R prints them), or nil for numbers that are not all
    /// whole (measurements).
    static func codes(_ c: DataTable.Column) -> Set<String>? {
        switch c.data {
        case .text(let v):
            return Set(v.compactMap { $0 })
        case .numeric(let v):
            var distinct = Set<Double>()
            for x in v {
                guard let x else { continue }
                guard x == x.rounded(), abs(x) < 1e15 else { return nil }
                distinct.insert(x == 0 ? 0 : x)
            }
            return Set(distinct.map(RNumberFormat.format))
        }
    }
}

/// Salts already answered (the most recent `capacity`), so a coordinator
/// cannot get two hash lists under one key.
final class SaltHistory: Sendable {
    private let state = Mutex<(seen: Set<String>, order: [String])>(([], []))
    let capacity: Int
    init(capacity: Int = 100_000) { self.capacity = capacity }

    /// Records a salt; false if it was seen before.
    func insert(_ salt: String) -> Bool {
        state.withLock { s in
            guard s.seen.insert(salt).inserted else { return false }
            s.order.append(salt)
            if s.order.count > capacity {
                let drop = s.order.count - capacity
                for old in s.order.prefix(drop) { s.seen.remove(old) }
                s.order.removeFirst(drop)
            }
            return true
        }
    }
}
