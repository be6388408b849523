// A fit as one self-contained HTML page: inline CSS and SVG, no scripts, no
// external references, so it opens offline and prints. Every figure and
// number is drawn from the FitResult that the JSON form encodes (one source);
// every text that came from a site or the analyst (site names, variable
// names, the formula, messages) is escaped. The page is also well-formed XML
// (every element closed, no named entities beyond XML's), so a test can parse it.

import Foundation

public enum HTMLReport {
    /// The whole page.
    public static func html(_ r: FitResult, title: String = "fedmix fit") -> String {
        page(title: title, body: "<h1>\(escape(title))</h1>\n" + fitSections(r))
    }

    /// Several fits of one analysis (fedmix compare's models, fedmix
    /// sensitivity's alternatives): an overview (the fits side by side, the
    /// fixed effects of every fit in one forest plot, and the command's own
    /// text), then each fit's sections under its label.
    public static func html(analyses: [(label: String, result: FitResult)], title: String, text: String) -> String {
        var body = "<h1>\(escape(title))</h1>\n<h2>Overview</h2>\n"
        var rows = [["l:analysis", "l:formula", "rows used", "sites", "log-likelihood", "AIC", "BIC"]]
        for (label, r) in analyses {
            rows.append(["l:" + label, "l:" + r.model.formula, String(r.nObs), String(r.nSites), number(r.loglik), number(r.aic), number(r.bic)])
        }
        body += table(rows)
        let terms = analyses.flatMap { $0.result.fixedEffects.map(\.name) }.reduce(into: [String]()) { if !$0.contains($1) { $0.append($1) } }
            .filter { $0 != "(Intercept)" }
        if !terms.isEmpty {
            body += "<p class=\"note\">Fixed effects of every fit with 95% intervals, by term ((Intercept) left out); the dashed line is 0.</p>\n"
            body += intervalPlot(terms.flatMap { t in
                analyses.compactMap { a in
                    a.result.fixedEffects.first { $0.name == t }.map { IntervalRow(label: "\(t) — \(a.label)", estimate: $0.estimate, lower: $0.ciLower, upper: $0.ciUpper) }
                }
            }, reference: 0)
        }
        body += "<pre>\(escape(text))</pre>\n"
        for (label, r) in analyses {
            body += "<h2 class=\"fit\">\(escape(label))</h2>\n"
            body += fitSections(r).replacingOccurrences(of: "<h2>", with: "<h3>").replacingOccurrences(of: "</h2>", with: "</h3>")
        }
        return page(title: title, body: body)
    }

    /// One fit's sections (headings h2; site and variable names are escaped, so "<h2>" occurs only as a heading).
    static func fitSections(_ r: FitResult) -> String {
        var body = ""
        body += summarySection(r)
        body += fixedEffectsSection(r)
        body += siteEffectsSection(r)
        body += crossedEffectsSection(r)
        body += shrinkageSection(r)
        body += iccSection(r)
        body += missingSection(r)
        body += convergenceSection(r)
        body += trafficSection(r)
        body += "<h2>Summary as text</h2>\n<pre>\(escape(Report.text(r)))</pre>\n"
        return body
    }

    static func page(title: String, body: String) -> String {
        """
        <!DOCTYPE html>
        <html lang="en">
        <head>
        <meta charset="utf-8"/>
        <title>\(escape(title))</title>
        <style>
        \(css)
        </style>
        </head>
        <body>
        \(body)<p class="foot">Written by fedmix \(escape(fedmixVersion)). Every number on this page comes from the same result as the JSON output (--format json).</p>
        </body>
        </html>

        """
    }

    /// Numbers as the page prints them (four significant digits, as R's signif()).
    public static func number(_ x: Double) -> String { Report.fmt(x, digits: 4) }

    /// Text for HTML content and attribute values.
    public static func escape(_ s: String) -> String {
        var out = ""
        out.reserveCapacity(s.count)
        for c in s.unicodeScalars {
            switch c {
            case "&": out += "&amp;"
            case "<": out += "&lt;"
            case ">": out += "&gt;"
            case "\"": out += "&quot;"
            case "'": out += "&#39;"
            default:
                // Control characters are not allowed in XML 1.0 (tab and newlines are).
                if c.value < 0x20 && c != "\n" && c != "\t" && c != "\r" { out += "\u{FFFD}" } else { out.unicodeScalars.append(c) }
            }
        }
        return out
    }

    static let css = """
    body { font-family: "DejaVu Sans", Helvetica, Arial, sans-serif; font-size: 14px; color: #222; max-width: 960px; margin: 24px auto; padding: 0 16px; }
    h1 { font-size: 22px; margin-bottom: 4px; }
    h2 { font-size: 17px; margin-top: 28px; border-bottom: 1px solid #ccc; padding-bottom: 3px; }
    h2.fit { font-size: 19px; margin-top: 48px; background: #eef3f9; padding: 6px 8px; border-bottom: 2px solid #1f5fa8; }
    h3 { font-size: 15px; margin-top: 22px; border-bottom: 1px solid #ddd; padding-bottom: 2px; }
    table { border-collapse: collapse; margin: 8px 0; }
    th, td { padding: 3px 10px; border-bottom: 1px solid #e4e4e4; text-align: right; }
    th { background: #f3f3f3; }
    td.l, th.l { text-align: left; }
    dl.kv { display: grid; grid-template-columns: max-content auto; gap: 2px 16px; }
    dl.kv dt { font-weight: bold; }
    dl.kv dd { margin: 0; }
    pre { background: #f7f7f7; padding: 10px; overflow-x: auto; font-size: 12px; }
    p.note { color: #555; font-size: 13px; }
    p.foot { color: #777; font-size: 12px; margin-top: 32px; }
    svg { display: block; margin: 6px 0; }
    svg text { font-family: "DejaVu Sans", Helvetica, Arial, sans-serif; font-size: 12px; fill: #222; }
    svg .axis { stroke: #888; stroke-width: 1; }
    svg .grid { stroke: #e6e6e6; stroke-width: 1; }
    svg .ref { stroke: #999; stroke-dasharray: 4 3; }
    svg .ci { stroke: #1f5fa8; stroke-width: 2; }
    svg .pt { fill: #1f5fa8; }
    svg .own { fill: none; stroke: #c0392b; stroke-width: 1.5; }
    svg .pooled { fill: #1f5fa8; fill-opacity: 0.8; }
    svg .move { stroke: #999; stroke-width: 1.2; }
    svg .sent { fill: #e08e29; }
    svg .recv { fill: #1f5fa8; }
    svg text.small { font-size: 10px; fill: #555; }
    svg text.cell { font-size: 10px; }
    svg text.dark { fill: #fff; }
    svg text.supp { font-weight: bold; }
    """

    // MARK: - Sections

    static func summarySection(_ r: FitResult) -> String {
        var kv: [(String, String)] = [
            ("Formula", r.model.formula),
            ("Family", "\(r.model.family) (\(r.model.link) link)"),
            ("Method", r.model.method + (r.nAGQ.map { $0 > 1 ? ", \($0) quadrature points" : "" } ?? "")),
            ("Observations", "\(r.nObs) rows used at \(r.nSites) site\(r.nSites == 1 ? "" : "s")"),
        ]
        if !r.groupOrder.isEmpty {
            kv.append(("Groups", r.groupOrder.map { "\($0): \(r.nGroups[$0].map(String.init) ?? "?")" }.joined(separator: "; ")))
        }
        let rows = r.sites.reduce(0) { $0 + $1.nRows }
        kv.append(("Rows at the sites", "\(rows) (\(rows - r.nObs) dropped as incomplete)"))
        kv.append(("Log-likelihood", "\(number(r.loglik)); AIC \(number(r.aic)); BIC \(number(r.bic))"))
        if r.model.family == "gaussian" { kv.append(("Residual SD", number(r.sigma))) }
        kv.append(("Converged", (r.converged ? "yes" : "NO") + (r.convergence.isEmpty ? "" : " — " + r.convergence)))
        if r.singular { kv.append(("Singular fit", "yes (a variance component at its boundary)")) }
        kv.append(("Rounds", "\(r.rounds) rounds, \(r.evaluations) evaluations; \(Report.bytes(r.bytesSent)) sent, \(Report.bytes(r.bytesReceived)) received"))
        for x in r.exclusions { kv.append(("Left out", "\(x.site): \(x.reason)")) }
        for m in r.messages { kv.append(("Message", m)) }
        var out = "<h2>Model and data</h2>\n<dl class=\"kv\">\n"
        for (k, v) in kv { out += "<dt>\(escape(k))</dt><dd>\(escape(v))</dd>\n" }
        return out + "</dl>\n"
    }

    static func fixedEffectsSection(_ r: FitResult) -> String {
        var out = "<h2>Fixed effects</h2>\n"
        var rows = [["l:term", "estimate", "std. error", "95% interval", "p"]]
        for f in r.fixedEffects {
            rows.append(["l:" + f.name, number(f.estimate), number(f.stdError),
                         "[\(number(f.ciLower)), \(number(f.ciUpper))]", Report.fmtP(f.pValue)])
        }
        out += table(rows)
        let plotted = r.fixedEffects.count > 1 ? r.fixedEffects.filter { $0.name != "(Intercept)" } : r.fixedEffects
        if plotted.isEmpty { return out }
        out += "<p class=\"note\">Forest plot: estimates with 95% intervals\(plotted.count < r.fixedEffects.count ? " ((Intercept) is in the table only: its scale differs)" : ""); the dashed line is 0.</p>\n"
        out += intervalPlot(plotted.map { IntervalRow(label: $0.name, estimate: $0.estimate, lower: $0.ciLower, upper: $0.ciUpper) },
                            reference: 0)
        return out
    }

    /// Site-level term columns, (Intercept) first.
    static func siteColumns(_ r: FitResult) -> [String] {
        var names = Set<String>()
        for s in r.sites { names.formUnion(s.effects.keys) }
        return names.sorted { a, b in a == "(Intercept)" ? b != "(Intercept)" : (b == "(Intercept)" ? false : a < b) }
    }

    static func siteEffectsSection(_ r: FitResult) -> String {
        var out = "<h2>Site effects</h2>\n"
        let columns = siteColumns(r)
        if columns.isEmpty {
            return out + "<p class=\"note\">The model has no random-effects term by site, so there are no site effects to plot.</p>\n"
        }
        for c in columns {
            let rows = r.sites.compactMap { s -> IntervalRow? in
                guard let b = s.effects[c], let sd = s.condSD[c] else { return nil }
                return IntervalRow(label: s.site, estimate: b, lower: b - 1.96 * sd, upper: b + 1.96 * sd)
            }.sorted { $0.estimate < $1.estimate }
            out += "<p class=\"note\">Caterpillar plot of \(escape(c)) by site: conditional modes with 95% intervals (±1.96 conditional SD), sorted; the dashed line is the average site.</p>\n"
            out += intervalPlot(rows, reference: 0)
        }
        return out
    }

    /// Levels drawn per crossed factor and column: a caterpillar plot of
    /// thousands of levels is unreadable, and the extremes are what an
    /// analyst looks for (every level is in the JSON and the text summary).
    static let crossedLevelsDrawn = 60

    /// Caterpillar plots of factors crossed with the sites (effects the
    /// sites share, such as year or surgeon), one per factor and column.
    static func crossedEffectsSection(_ r: FitResult) -> String {
        guard let crossed = r.crossedEffects, !crossed.isEmpty else { return "" }
        var out = "<h2>Crossed effects</h2>\n"
        let groups = crossed.map(\.group).reduce(into: [String]()) { if !$0.contains($1) { $0.append($1) } }
        for g in groups {
            let levels = crossed.filter { $0.group == g }
            let columns = Set(levels.flatMap(\.effects.keys)).sorted { a, b in a == "(Intercept)" ? b != "(Intercept)" : (b == "(Intercept)" ? false : a < b) }
            for c in columns {
                var rows = levels.compactMap { l -> IntervalRow? in
                    guard let b = l.effects[c], let sd = l.condSD[c] else { return nil }
                    return IntervalRow(label: l.level, estimate: b, lower: b - 1.96 * sd, upper: b + 1.96 * sd)
                }.sorted { $0.estimate < $1.estimate }
                var note = "Caterpillar plot of \(escape(c)) by \(escape(g)), a factor crossed with the sites (its levels are shared by them): conditional modes with 95% intervals (±1.96 conditional SD), sorted; the dashed line is the average level."
                if rows.count > crossedLevelsDrawn {
                    let half = crossedLevelsDrawn / 2
                    note += " \(escape(g)) has \(rows.count) levels: the \(half) lowest and \(half) highest are drawn; every level is in the text summary and the JSON output (crossed_effects)."
                    rows = Array(rows.prefix(half) + rows.suffix(half))
                }
                out += "<p class=\"note\">\(note)</p>\n" + intervalPlot(rows, reference: 0)
            }
        }
        return out
    }

    static func shrinkageSection(_ r: FitResult) -> String {
        var out = "<h2>Shrinkage</h2>\n"
        let columns = siteColumns(r)
        var any = false
        for c in columns {
            let sites = r.sites.filter { $0.effects[c] != nil && $0.ownEffects[c] != nil }
            if sites.isEmpty { continue }
            any = true
            out += "<p class=\"note\">\(escape(c)): each site's own estimate (open circle) moved to its partially pooled one (filled), point area by rows used; sorted by the pooled estimate.</p>\n"
            out += shrinkagePlot(sites.map { ($0.site, $0.ownEffects[c]!, $0.effects[c]!, $0.nUsed) }.sorted { $0.2 < $1.2 })
        }
        if !any { out += "<p class=\"note\">No site's own (no-pooling) estimate is available for this model.</p>\n" }
        return out
    }

    static func iccSection(_ r: FitResult) -> String {
        var out = "<h2>Intraclass correlation</h2>\n"
        let groups = r.groupOrder.filter { r.icc[$0] != nil }
        if groups.isEmpty { return out + "<p class=\"note\">No ICC for this model.</p>\n" }
        var rows = [["l:group", "ICC", "clusters", "mean size", "design effect"]]
        for g in groups {
            let icc = r.icc[g]!
            let d = designEffect(r, group: g, icc: icc)
            rows.append(["l:" + g, number(icc), d.map { String($0.nClusters) } ?? "", d.map { number($0.meanClusterSize) } ?? "",
                         d.map { number($0.unequal ?? $0.equal) } ?? ""])
        }
        out += table(rows)
        out += "<p class=\"note\">Design effect: 1 + ((CV² + 1)·m̄ − 1)·ICC with the sites' rows as cluster sizes when the group is the site, else 1 + (m̄ − 1)·ICC.\(r.model.family == "gaussian" ? "" : " GLMM ICCs are on the latent scale.")</p>\n"
        return out
    }

    /// The design effect of a group's ICC: cluster sizes are the sites' rows
    /// when the group's clusters are the sites, else only their mean is known.
    static func designEffect(_ r: FitResult, group: String, icc: Double) -> DesignEffect? {
        guard let g = r.nGroups[group], g > 0, r.nObs > 0 else { return nil }
        let used = r.sites.filter { $0.nUsed > 0 }
        if used.count == g && used.allSatisfy({ !$0.effects.isEmpty }) {
            return DesignEffect(icc: icc, clusterSizes: used.map(\.nUsed), group: group)
        }
        return DesignEffect(icc: icc, nObs: r.nObs, nClusters: g, group: group)
    }

    static func missingSection(_ r: FitResult) -> String {
        var out = "<h2>Missing values by site</h2>\n"
        if r.variables.isEmpty || r.sites.isEmpty { return out + "<p class=\"note\">No model variables.</p>\n" }
        out += "<p class=\"note\">Missing values of each model variable at each site, shaded by the share of the site's rows; hatched cells are counts the site suppressed (e.g. “&lt;5”).</p>\n"
        return out + heatMap(r)
    }

    /// The objective by optimizer iteration, as its distance above the final
    /// value on a log scale (where the last digits are won is visible).
    static func convergenceSection(_ r: FitResult) -> String {
        guard let trace = r.trace, trace.count > 1 else { return "" }
        var out = "<h2>Convergence</h2>\n"
        out += "<p class=\"note\">Objective at each Newton iteration, as its distance above the final objective \(escape(number(r.objective))) (log scale; below 1e-12 drawn at 1e-12). \(trace.count) iterations; \(r.rounds) rounds. \(escape(r.convergence))</p>\n"
        let starts = trace.filter { $0.iteration == 1 }.count
        if starts > 1 {
            out += "<p class=\"note\">\(starts) optimizer starts (each line is one; the lowest optimum is kept).</p>\n"
        }
        return out + convergencePlot(trace.map(\.objective), restarts: trace.map { $0.iteration == 1 },
                                     final: trace.map(\.objective).min() ?? r.objective)
    }

    static func convergencePlot(_ values: [Double], restarts: [Bool], final: Double) -> String {
        let left = 70.0, right = 700.0, top = 10.0, bottom = 190.0, width = 760
        let gaps = values.map { log10(max($0 - final, 1e-12)) }
        let y = Scale(gaps, from: bottom, to: top)
        let x = Scale([1, Double(max(values.count, 2))], from: left, to: right)
        var out = svgOpen(width, Int(bottom + 34), "objective by iteration")
        out += line(left, bottom, right, bottom, "axis") + line(left, top, left, bottom, "axis")
        for t in y.ticks where t == t.rounded() {
            out += line(left, y(t), right, y(t), "grid")
            out += text(left - 6, y(t) + 4, "1e\(Int(t))", anchor: "end", cls: "small")
        }
        for t in x.ticks where t >= 1 && t == t.rounded() {
            out += text(x(t), bottom + 15, String(Int(t)), anchor: "middle", cls: "small")
        }
        out += text((left + right) / 2, bottom + 30, "iteration", anchor: "middle", cls: "small")
        // One line per optimizer start.
        var segment: [String] = []
        for (i, g) in gaps.enumerated() {
            if restarts[i] && !segment.isEmpty {
                out += "<polyline class=\"ci\" fill=\"none\" points=\"\(segment.joined(separator: " "))\"/>\n"
                segment = []
            }
            segment.append("\(f(x(Double(i + 1)))),\(f(y(g)))")
        }
        out += "<polyline class=\"ci\" fill=\"none\" points=\"\(segment.joined(separator: " "))\"/>\n"
        for (i, g) in gaps.enumerated() {
            out += "<circle class=\"pt\" cx=\"\(f(x(Double(i + 1))))\" cy=\"\(f(y(g)))\" r=\"3\"><title>iteration \(i + 1): objective \(escape(number(values[i])))</title></circle>\n"
        }
        return out + "</svg>\n"
    }

    static func trafficSection(_ r: FitResult) -> String {
        var out = "<h2>Traffic per site</h2>\n"
        out += "<p class=\"note\">Bytes the coordinator sent to each site and received from it over the whole fit.</p>\n"
        return out + trafficPlot(r.sites.map { ($0.site, $0.bytesSent, $0.bytesReceived) })
    }

    static func table(_ rows: [[String]]) -> String {
        guard let head = rows.first else { return "" }
        func cell(_ tag: String, _ s: String) -> String {
            s.hasPrefix("l:") ? "<\(tag) class=\"l\">\(escape(String(s.dropFirst(2))))</\(tag)>" : "<\(tag)>\(escape(s))</\(tag)>"
        }
        var out = "<table>\n<tr>" + head.map { cell("th", $0) }.joined() + "</tr>\n"
        for row in rows.dropFirst() { out += "<tr>" + row.map { cell("td", $0) }.joined() + "</tr>\n" }
        return out + "</table>\n"
    }

    // MARK: - SVG helpers

    struct IntervalRow { var label: String; var estimate: Double; var lower: Double; var upper: Double }

    /// A linear map from data to pixels.
    struct Scale {
        var lo: Double, hi: Double, from: Double, to: Double
        init(_ values: [Double], from: Double, to: Double) {
            let finite = values.filter(\.isFinite)
            var lo = finite.min() ?? 0, hi = finite.max() ?? 1
            if hi - lo < 1e-12 { lo -= 1; hi += 1 }
            let pad = 0.04 * (hi - lo)
            self.lo = lo - pad; self.hi = hi + pad; self.from = from; self.to = to
        }
        func callAsFunction(_ x: Double) -> Double { from + (min(max(x, lo), hi) - lo) / (hi - lo) * (to - from) }
        /// About five round ticks inside the range.
        var ticks: [Double] {
            let raw = (hi - lo) / 5, mag = pow(10, floor(log10(raw))), f = raw / mag
            let step = (f < 1.5 ? 1 : f < 3 ? 2 : f < 7 ? 5 : 10) * mag
            var t = (lo / step).rounded(.up) * step, out: [Double] = []
            while t <= hi + 1e-9 * step { out.append(abs(t) < 1e-9 * step ? 0 : t); t += step }
            return out
        }
    }

    static func f(_ x: Double) -> String { String(format: "%.1f", x) }

    static func svgOpen(_ w: Int, _ h: Int, _ label: String) -> String {
        "<svg width=\"\(w)\" height=\"\(h)\" viewBox=\"0 0 \(w) \(h)\" role=\"img\" aria-label=\"\(escape(label))\">\n"
    }

    static func line(_ x1: Double, _ y1: Double, _ x2: Double, _ y2: Double, _ cls: String) -> String {
        "<line class=\"\(cls)\" x1=\"\(f(x1))\" y1=\"\(f(y1))\" x2=\"\(f(x2))\" y2=\"\(f(y2))\"/>\n"
    }

    static func text(_ x: Double, _ y: Double, _ s: String, anchor: String = "start", cls: String? = nil) -> String {
        "<text x=\"\(f(x))\" y=\"\(f(y))\" text-anchor=\"\(anchor)\"\(cls.map { " class=\"\($0)\"" } ?? "")>\(escape(s))</text>\n"
    }

    /// Labels longer than the label column are cut (the full text is in the tooltip).
    static func short(_ s: String, _ n: Int = 28) -> String { s.count <= n ? s : String(s.prefix(n - 1)) + "…" }

    /// An x axis with grid lines from `top` to `bottom`.
    static func xAxis(_ x: Scale, top: Double, bottom: Double) -> String {
        var out = line(x.from, bottom, x.to, bottom, "axis")
        for t in x.ticks {
            out += line(x(t), top, x(t), bottom, "grid")
            out += text(x(t), bottom + 15, String(format: "%g", t), anchor: "middle", cls: "small")
        }
        return out
    }

    /// One row per estimate with its interval (forest and caterpillar plots);
    /// the figures are printed at the right.
    static func intervalPlot(_ rows: [IntervalRow], reference: Double?) -> String {
        let rowH = 20.0, top = 10.0, left = 190.0, right = 700.0, width = 930
        let bottom = top + rowH * Double(rows.count) + 6
        let height = Int(bottom + 26)
        let x = Scale(rows.flatMap { [$0.lower, $0.upper, $0.estimate] } + (reference.map { [$0] } ?? []), from: left, to: right)
        var out = svgOpen(width, height, "interval plot")
        out += xAxis(x, top: top, bottom: bottom)
        if let r = reference { out += line(x(r), top, x(r), bottom, "ref") }
        for (i, row) in rows.enumerated() {
            let y = top + rowH * (Double(i) + 0.5)
            out += "<g><title>\(escape(row.label)): \(number(row.estimate)) [\(number(row.lower)), \(number(row.upper))]</title>\n"
            out += text(left - 8, y + 4, short(row.label), anchor: "end")
            out += line(x(row.lower), y, x(row.upper), y, "ci")
            out += "<circle class=\"pt\" cx=\"\(f(x(row.estimate)))\" cy=\"\(f(y))\" r=\"4\"/>\n"
            out += text(right + 12, y + 4, "\(number(row.estimate)) [\(number(row.lower)), \(number(row.upper))]", cls: "small")
            out += "</g>\n"
        }
        return out + "</svg>\n"
    }

    /// Own estimate → pooled estimate per site, circle area by rows.
    static func shrinkagePlot(_ sites: [(site: String, own: Double, pooled: Double, rows: Int)]) -> String {
        let rowH = 22.0, top = 10.0, left = 190.0, right = 700.0, width = 930
        let bottom = top + rowH * Double(sites.count) + 6
        let x = Scale(sites.flatMap { [$0.own, $0.pooled] } + [0], from: left, to: right)
        let maxRows = Double(sites.map(\.rows).max() ?? 1)
        var out = svgOpen(width, Int(bottom + 26), "shrinkage plot")
        out += xAxis(x, top: top, bottom: bottom)
        out += line(x(0), top, x(0), bottom, "ref")
        for (i, s) in sites.enumerated() {
            let y = top + rowH * (Double(i) + 0.5)
            let radius = 2.5 + 6.5 * (Double(s.rows) / max(maxRows, 1)).squareRoot()
            out += "<g><title>\(escape(s.site)): own \(number(s.own)), pooled \(number(s.pooled)), \(s.rows) rows</title>\n"
            out += text(left - 8, y + 4, short(s.site), anchor: "end")
            out += line(x(s.own), y, x(s.pooled), y, "move")
            // The pooled point first: the open circle of the own estimate stays visible over it.
            out += "<circle class=\"pooled\" cx=\"\(f(x(s.pooled)))\" cy=\"\(f(y))\" r=\"\(f(radius))\"/>\n"
            out += "<circle class=\"own\" cx=\"\(f(x(s.own)))\" cy=\"\(f(y))\" r=\"\(f(radius))\"/>\n"
            out += text(right + 12, y + 4, "\(number(s.own)) → \(number(s.pooled)) (n = \(s.rows))", cls: "small")
            out += "</g>\n"
        }
        return out + "</svg>\n"
    }

    /// Sites by model variables; shade by missing share, hatched when suppressed.
    static func heatMap(_ r: FitResult) -> String {
        let vars = r.variables
        let cellW = min(90.0, max(44.0, 700.0 / Double(max(vars.count, 1)))), cellH = 20.0
        let left = 190.0, top = 70.0
        let width = Int(left + cellW * Double(vars.count) + 20), height = Int(top + cellH * Double(r.sites.count) + 10)
        var out = svgOpen(width, height, "missing values by site and variable")
        out += "<defs><pattern id=\"hatch\" width=\"6\" height=\"6\" patternUnits=\"userSpaceOnUse\" patternTransform=\"rotate(45)\">"
        out += "<rect width=\"6\" height=\"6\" fill=\"#f1f1f1\"/><line x1=\"0\" y1=\"0\" x2=\"0\" y2=\"6\" stroke=\"#c4c4c4\" stroke-width=\"1.5\"/></pattern></defs>\n"
        for (j, v) in vars.enumerated() {
            let cx = left + cellW * (Double(j) + 0.5)
            out += "<text x=\"\(f(cx))\" y=\"\(f(top - 6))\" transform=\"rotate(-35 \(f(cx)) \(f(top - 6)))\">\(escape(short(v, 18)))</text>\n"
        }
        for (i, s) in r.sites.enumerated() {
            let y = top + cellH * Double(i)
            out += text(left - 8, y + cellH / 2 + 4, short(s.site), anchor: "end")
            for (j, v) in vars.enumerated() {
                let x = left + cellW * Double(j)
                let count = s.missing[v]
                let fill: String, label: String; var dark = false, suppressed = false
                switch count {
                case .exact(let n)?:
                    let share = s.nRows > 0 ? Double(n) / Double(s.nRows) : 0
                    fill = shade(share); label = String(n); dark = share > 0.35
                case .suppressed(let t)?:
                    fill = "url(#hatch)"; label = t; suppressed = true
                case nil:
                    fill = "#ffffff"; label = "—"
                }
                out += "<g><title>\(escape(s.site)), \(escape(v)): \(escape(label)) missing of \(s.nRows) rows</title>"
                out += "<rect x=\"\(f(x))\" y=\"\(f(y))\" width=\"\(f(cellW - 1))\" height=\"\(f(cellH - 1))\" fill=\"\(fill)\"/>"
                out += "<text class=\"\(dark ? "cell dark" : suppressed ? "cell supp" : "cell")\" x=\"\(f(x + cellW / 2))\" y=\"\(f(y + cellH / 2 + 4))\" text-anchor=\"middle\">\(escape(label))</text></g>\n"
            }
        }
        return out + "</svg>\n"
    }

    /// White (none missing) to dark orange (all missing).
    static func shade(_ share: Double) -> String {
        let t = min(max(share, 0), 1).squareRoot()
        func mix(_ a: Double, _ b: Double) -> Int { Int((a + (b - a) * t).rounded()) }
        return String(format: "#%02x%02x%02x", mix(255, 200), mix(255, 80), mix(255, 20))
    }

    static func trafficPlot(_ sites: [(site: String, sent: Int, received: Int)]) -> String {
        let rowH = 26.0, top = 24.0, left = 190.0, right = 700.0, width = 930
        let bottom = top + rowH * Double(sites.count) + 4
        let maxBytes = Double(sites.map { max($0.sent, $0.received) }.max() ?? 1)
        let x = Scale([0, maxBytes], from: left, to: right)
        var out = svgOpen(width, Int(bottom + 26), "traffic per site")
        out += "<rect class=\"sent\" x=\"\(f(left))\" y=\"4\" width=\"10\" height=\"10\"/>" + text(left + 14, 13, "sent to the site", cls: "small")
        out += "<rect class=\"recv\" x=\"\(f(left + 130))\" y=\"4\" width=\"10\" height=\"10\"/>" + text(left + 144, 13, "received from the site", cls: "small")
        out += line(x(0), top, x(0), bottom, "axis")
        for (i, s) in sites.enumerated() {
            let y = top + rowH * Double(i)
            out += "<g><title>\(escape(s.site)): \(s.sent) bytes sent, \(s.received) bytes received</title>\n"
            out += text(left - 8, y + rowH / 2 + 4, short(s.site), anchor: "end")
            out += "<rect class=\"sent\" x=\"\(f(x(0)))\" y=\"\(f(y + 3))\" width=\"\(f(x(Double(s.sent)) - x(0)))\" height=\"9\"/>\n"
            out += "<rect class=\"recv\" x=\"\(f(x(0)))\" y=\"\(f(y + 13))\" width=\"\(f(x(Double(s.received)) - x(0)))\" height=\"9\"/>\n"
            out += text(right + 12, y + rowH / 2 + 4, "\(Report.bytes(s.sent)) sent, \(Report.bytes(s.received)) received", cls: "small")
            out += "</g>\n"
        }
        return out + "</svg>\n"
    }
}
