// GLMM cases of `fedmix bench`: the ohio data (many tiny sites, adaptive
// quadrature); and lme4's timing of every bench fit (lmer or glmer), so the
// figures are read beside the reference implementation on the same machine
// and rows.

import Foundation
import Coordinator
import SiteAgent

/// geepack's `ohio` (wheeze at ages 7–10 of 537 children; mother smoking),
/// one child per site. Read through R when geepack is installed; otherwise
/// simulated with the same shape (537 × 4 binary rows, a smoking covariate)
/// from the published fit's parameters.
enum OhioData {
    static let formula = "resp ~ age + smoke + (1 | site)"
    static let lme4Formula = "resp ~ age + smoke + (1 | id)"
    static let nAGQ = 12

    struct Row { var id: Int; var resp: Int; var age: Int; var smoke: Int }

    static func load(seed: UInt64) -> (tables: [(site: String, table: DataTable)], rows: [Row], source: String) {
        let rows: [Row], source: String
        if let r = fromR() { rows = r; source = "geepack::ohio" } else { rows = simulated(seed: seed); source = "simulated like geepack::ohio" }
        var byChild: [Int: [Row]] = [:]
        for r in rows { byChild[r.id, default: []].append(r) }
        let tables = byChild.keys.sorted().map { id -> (site: String, table: DataTable) in
            let rs = byChild[id]!
            func column(_ name: String, _ f: (Row) -> Int) -> DataTable.Column {
                .init(name: name, data: .numeric(rs.map { Optional(Double(f($0))) }))
            }
            return (String(format: "child-%03d", id),
                    DataTable(columns: [column("resp", \.resp), column("age", \.age), column("smoke", \.smoke)], rowCount: rs.count))
        }
        return (tables, rows, source)
    }

    /// The data set's rows through `Rscript` (nil when R or geepack is missing).
    static func fromR() -> [Row]? {
        let file = NSTemporaryDirectory() + "/fedmix-ohio-\(getpid()).csv"
        defer { try? FileManager.default.removeItem(atPath: file) }
        guard Lme4Timing.rscript(["-e", "data(ohio, package = 'geepack'); write.csv(ohio[, c('id', 'resp', 'age', 'smoke')], '\(file)', row.names = FALSE)"]) != nil,
              let text = try? String(contentsOfFile: file, encoding: .utf8) else { return nil }
        var out: [Row] = []
        for line in text.split(separator: "\n").dropFirst() {
            let v = line.split(separator: ",").compactMap { Int($0.trimmingCharacters(in: CharacterSet(charactersIn: "\" "))) }
            guard v.count == 4 else { return nil }
            out.append(Row(id: v[0], resp: v[1], age: v[2], smoke: v[3]))
        }
        return out.count == 2148 ? out : nil
    }

    /// 537 children × ages −2…1, logit P(wheeze) = −3.1 − 0.175 age + 0.4 smoke + b, b ~ N(0, 2.16²).
    static func simulated(seed: UInt64) -> [Row] {
        var rng = SeededRandom(seed: seed)
        var out: [Row] = []
        for id in 0..<537 {
            let smoke = rng.uniform() < 0.35 ? 1 : 0
            let b = 2.16 * rng.normal()
            for age in -2...1 {
                let eta = -3.1 - 0.175 * Double(age) + 0.4 * Double(smoke) + b
                out.append(Row(id: id, resp: rng.uniform() < 1 / (1 + exp(-eta)) ? 1 : 0, age: age, smoke: smoke))
            }
        }
        return out
    }
}

/// lme4's lmer or glmer on the same rows, timed inside R (the fit only: the CSV is
/// read before the clock starts, as fedmix's design + fitting excludes
/// generating the rows).
enum Lme4Timing {
    /// Runs Rscript with `arguments`; its standard output, or nil when it fails or is missing.
    static func rscript(_ arguments: [String]) -> String? {
        let p = Process()
        p.executableURL = URL(fileURLWithPath: "/usr/bin/env")
        p.arguments = ["Rscript"] + arguments
        let out = Pipe()
        p.standardOutput = out
        p.standardError = FileHandle.nullDevice
        do { try p.run() } catch { return nil }
        let data = out.fileHandleForReading.readDataToEndOfFile()
        p.waitUntilExit()
        return p.terminationStatus == 0 ? String(decoding: data, as: UTF8.self) : nil
    }

    /// One line for the report: lme4's time and criterion beside fedmix's,
    /// with the ratio over design + fitting and over the whole analysis
    /// (agents' start-up included).
    static func line(fedmix m: BenchCommand.Measurement, seed: UInt64) -> String {
        let file = NSTemporaryDirectory() + "/fedmix-bench-lme4-\(getpid()).csv"
        defer { try? FileManager.default.removeItem(atPath: file) }
        var csv = ""
        let fit: String, criterion: String, label: String
        switch m.model {
        case .ohio:
            fit = "glmer(\(OhioData.lme4Formula), family = binomial, data = d, nAGQ = \(OhioData.nAGQ))"
            csv = "id,resp,age,smoke\n" + OhioData.load(seed: seed).rows.map { "\($0.id),\($0.resp),\($0.age),\($0.smoke)" }.joined(separator: "\n") + "\n"
        case .egsingle:
            fit = "lmer(\(EgsingleData.lme4Formula), data = d, REML = TRUE)"
            csv = "schoolid,childid,year,math\n" + EgsingleData.load(seed: seed).rows.map { "\($0.school),\($0.child),\($0.year),\($0.math)" }.joined(separator: "\n") + "\n"
        case .nested:
            fit = "lmer(y ~ x + (1 | site/patient/episode), data = d, REML = TRUE)"
            csv = NestedVisitsData.csv(seed: seed, patients: m.patients ?? NestedVisitsData.patientsPerSite)
        case .nestedGLMM:
            fit = "glmer(\(NestedVisitsData.glmmFormula), family = binomial, data = d)"
            csv = NestedVisitsData.csv(seed: seed, patients: m.patients ?? NestedVisitsData.patientsPerSite, binary: true)
        case .surgeons:
            fit = "lmer(\(SurgeonsData.formula), data = d, REML = TRUE)"
            csv = SurgeonsData.csv(seed: seed)
        case .surgeonsGLMM:
            fit = "glmer(\(SurgeonsGLMMData.formula), family = binomial, data = d)"
            csv = SurgeonsGLMMData.csv(seed: seed, surgeons: m.surgeons ?? SurgeonsGLMMData.surgeons)
        case .surgeonWards:
            fit = "lmer(\(SurgeonWardsData.formula), data = d, REML = TRUE)"
            csv = SurgeonWardsData.csv(seed: seed)
        case .surgeonWardsGLMM:
            fit = "glmer(\(SurgeonWardsGLMMData.formula), family = binomial, data = d)"
            csv = SurgeonWardsGLMMData.csv(seed: seed, surgeons: m.surgeons ?? SurgeonsGLMMData.surgeons)
        case .binary, .slope, .patient:
            fit = m.model == .binary ? "glmer(\(m.model.formula), family = binomial, data = d)" : "lmer(\(m.model.formula), data = d, REML = TRUE)"
            let data = BenchmarkData.generate(rows: m.rows, sites: m.sites, seed: seed)
            csv = data.sites.enumerated().map { $1.csv(header: $0 == 0) }.joined()
        }
        if m.model.isGLMM { criterion = "-2 * as.numeric(logLik(f))"; label = "−2 log L" } else { criterion = "REMLcrit(f)"; label = "REML criterion" }
        guard (try? csv.write(toFile: file, atomically: true, encoding: .utf8)) != nil else { return "      lme4     could not write the rows" }
        let script = """
            suppressMessages(library(lme4)); d <- read.csv('\(file)'); \
            t <- system.time(f <- \(fit)); \
            cat(sprintf('%.6f %.6f %s', t[['elapsed']], \(criterion), paste(sprintf('%.6f', fixef(f)), collapse = ',')))
            """
        guard let out = rscript(["-e", script]) else { return "      lme4     not available (Rscript with lme4 is needed)" }
        let parts = out.split(separator: " ")
        guard parts.count == 3, let seconds = Double(parts[0]), let value = Double(parts[1]) else { return "      lme4     unexpected output: \(out)" }
        func speed(_ ours: Double) -> String {
            let ratio = seconds / ours
            return ratio >= 1 ? String(format: "fedmix %.1f× faster", ratio) : String(format: "fedmix %.1f× slower", 1 / ratio)
        }
        let whole = m.setupSeconds + m.analysisSeconds
        let setupWord = m.mode == .inProcess ? "site services" : "certificates, agents and handshakes"
        return "      lme4     \(m.model.isGLMM ? "glmer" : "lmer") \(BenchCommand.secs(seconds)) vs fedmix design + fitting \(BenchCommand.secs(m.analysisSeconds)): \(speed(m.analysisSeconds)); "
            + "with \(setupWord) \(BenchCommand.secs(whole)): \(speed(whole))\n"
            + "               \(label) lme4 \(String(format: "%.6f", value)), fedmix \(String(format: "%.6f", m.objective)); β lme4 [\(parts[2])]"
    }
}
