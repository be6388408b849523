// R's `terms.formula` for the parts of a formula that need no data: the
// variable list, the expansion of `+ : * -` into terms, the intercept,
// offsets, the ordering of terms (keep.order = FALSE) and the "factors"
// pattern that says, per term and variable, whether a factor is coded by
// contrasts (1) or by indicators of all its levels (2).

/// One model term: an interaction of one or more formula variables.
public struct ModelTerm: Sendable, Hashable {
    /// R's term label, e.g. `a:b`, `I(age^2)`, `factor(period)`.
    public var label: String
    /// Indices into `ModelTerms.variables`, ascending (the order R uses in
    /// labels and column names).
    public var variables: [Int]
    /// R's `attr(terms, "factors")` entries for those variables:
    /// 1 = contrasts, 2 = indicators of all levels (before model.matrix's
    /// no-intercept adjustment, which needs to know which variables are factors).
    public var codes: [Int]
    /// Number of variables (R's `order`).
    public var order: Int { variables.count }
}

/// The terms of a model formula (one side of a bar, or the fixed part).
public struct ModelTerms: Sendable, Hashable {
    /// R's variable list (without the response), in order of first appearance.
    public var variables: [FormulaNode]
    /// Terms in R's order: by order, then by first appearance.
    public var terms: [ModelTerm]
    public var intercept: Bool
    /// Arguments of `offset(...)` terms, in variable order.
    public var offsets: [FormulaNode]

    public var termLabels: [String] { terms.map(\.label) }
    /// R's variable names (deparsed), parallel to `variables`.
    public var variableNames: [String] { variables.map(\.deparsed) }

    public init(variables: [FormulaNode], terms: [ModelTerm], intercept: Bool, offsets: [FormulaNode]) {
        self.variables = variables; self.terms = terms; self.intercept = intercept; self.offsets = offsets
    }

    /// Expands a formula right-hand side (already validated, bars removed;
    /// nil means "intercept only") as R's `terms.formula` does.
    static func build(_ rhs: FormulaNode?) -> ModelTerms {
        var b = TermsBuilder()
        guard let rhs else {
            return ModelTerms(variables: [], terms: [], intercept: true, offsets: [])
        }
        b.extract(rhs)
        let raw = b.encode(rhs)
        // Offsets: variables that are offset(...) calls; terms containing them go.
        var offsetIndices: Set<Int> = []
        var offsets: [FormulaNode] = []
        for (i, v) in b.variables.enumerated() {
            if case .call("offset", let args) = v.kind, args.count == 1 {
                offsetIndices.insert(i); offsets.append(args[0])
            }
        }
        let kept = raw.filter { $0.isDisjoint(with: offsetIndices) }
        // Sort by order, otherwise keeping the order of appearance.
        let maxOrder = kept.map(\.count).max() ?? 0
        var sorted: [Set<Int>] = []
        if maxOrder > 0 {
            for k in 1...maxOrder { sorted += kept.filter { $0.count == k } }
        }
        var terms: [ModelTerm] = []
        for (j, t) in sorted.enumerated() {
            let vars = t.sorted()
            let codes = vars.map { v -> Int in
                let rest = t.subtracting([v])
                if rest.isEmpty { return 1 }
                for p in sorted[..<j] where rest.isSubset(of: p) { return 1 }
                return 2
            }
            let label = vars.map { b.variables[$0].deparsed }.joined(separator: ":")
            terms.append(ModelTerm(label: label, variables: vars, codes: codes))
        }
        return ModelTerms(variables: b.variables, terms: terms, intercept: b.intercept, offsets: offsets)
    }
}

/// The bit-set algebra of R's EncodeVars, with sets of variable indices.
struct TermsBuilder {
    var variables: [FormulaNode] = []
    private var keys: [String: Int] = [:]
    var intercept = true
    private var parity = true

    mutating func install(_ n: FormulaNode) -> Int {
        let key = n.deparsed
        if let i = keys[key] { return i }
        variables.append(n)
        keys[key] = variables.count - 1
        return variables.count - 1
    }

    /// R's ExtractVars: installs variables in order of appearance in the
    /// text, including those on the right of `-` (as R 4.x does), so that
    /// they order the variables of interactions.
    mutating func extract(_ n: FormulaNode) {
        switch n.kind {
        case .number, .string: return
        case .name, .call, .named: _ = install(n)
        case .paren(let a), .unary(_, let a): extract(a)
        case .binary(let op, let a, let b):
            extract(a)
            if op != .power { extract(b) }
        }
    }

    /// Removes empty terms and repeats, keeping first occurrences.
    private static func trim(_ list: [Set<Int>]) -> [Set<Int>] {
        var out: [Set<Int>] = []
        for t in list where !t.isEmpty && !out.contains(t) { out.append(t) }
        return out
    }

    /// R's EncodeVars.
    mutating func encode(_ n: FormulaNode) -> [Set<Int>] {
        switch n.kind {
        case .number(let v):
            if v == 1 { intercept = parity } else if v == 0 { intercept = !parity }
            return []
        case .name, .call, .string, .named:
            return [[install(n)]]
        case .paren(let a):
            return encode(a)
        case .unary(let op, let a):
            if op == .plus { return encode(a) }
            parity.toggle(); _ = encode(a); parity.toggle()
            return []
        case .binary(let op, let a, let b):
            switch op {
            case .plus:
                let l = encode(a); let r = encode(b)
                return Self.trim(l + r)
            case .colon:
                let l = encode(a); let r = encode(b)
                return Self.trim(l.flatMap { x in r.map { x.union($0) } })
            case .times:
                let l = encode(a); let r = encode(b)
                return Self.trim(l + r + l.flatMap { x in r.map { x.union($0) } })
            case .minus:
                let l = encode(a)
                parity.toggle(); let r = encode(b); parity.toggle()
                return l.filter { !r.contains($0) }
            default:
                // `/`, `^`, `|` and `~` are rejected before terms are built.
                return [[install(n)]]
            }
        }
    }
}
