// The steps every model takes at a site before its own arithmetic: the rows
// the filter selects, the model's columns, the complete cases among them,
// and each grouping factor's site-local level of every used row. Linear and
// generalized models share them, so both count and index rows the same way.

import Protocol

struct CompleteCases {
    /// Rows the filter selects.
    let rows: Int
    /// Missing values per required variable among the selected rows.
    let missing: [String: Int]
    /// Indices of the complete selected rows.
    let usedRows: [Int]
    /// Every column the model reads.
    let columns: [String: DataTable.Column]

    init(table: DataTable, spec: ModelSpec, dataset: String, selection: [Bool]?) throws {
        let selected = try selection ?? RowFilter.select(spec.filter, table: table, dataset: dataset)
        rows = selected.reduce(0) { $0 + ($1 ? 1 : 0) }
        let required = spec.requiredVariables
        var columns: [String: DataTable.Column] = [:]
        // Required variables, then those read only through missing(x) or a fill.
        for v in required + SiteDesign.allVariables(spec) where columns[v] == nil {
            guard let c = table.column(named: v) else { throw ModelFrameError.unknownVariable(v, dataset: dataset) }
            columns[v] = c
        }
        self.columns = columns
        var missing: [String: Int] = [:]
        var complete = selected
        for v in required { missing[v] = SiteDesign.markMissing(columns[v]!, &complete, among: selected) }
        self.missing = missing
        usedRows = (0..<table.rowCount).filter { complete[$0] }
        guard !usedRows.isEmpty else { throw ModelFrameError.noCompleteRows(site: "", rows: rows) }
    }

    /// Per grouping factor of the model (in `factorGroupings` order): each
    /// used row's level at this site, and the number of levels.
    func factorLevels(_ spec: ModelSpec) -> (index: [[Int]], counts: [Int]) {
        var index: [[Int]] = [], counts: [Int] = []
        for g in spec.factorGroupings {
            switch g {
            case .site:
                index.append([Int](repeating: 0, count: usedRows.count)); counts.append(1)
            case .withinSite(let vs):
                let (idx, n) = SiteDesign.levelIndex(vs.map { columns[$0]! }, rows: usedRows)
                index.append(idx); counts.append(n)
            case .crossed(let v, let levels):
                // The agreed coding's index of each row's code; −1 for a code
                // the coding does not have (SiteDesign refuses those rows).
                let position = Dictionary(levels.enumerated().map { ($1, $0) }, uniquingKeysWith: { a, _ in a })
                let c = columns[v]!
                index.append(usedRows.map { position[SiteDesign.key(c, $0)] ?? -1 }); counts.append(levels.count)
            }
        }
        return (index, counts)
    }
}
