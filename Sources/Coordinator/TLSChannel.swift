// A channel to a site agent over mutual TLS: connect, exchange hellos (the
// agent speaks first), then one request line and one answer line at a time.

import Foundation
import Protocol
import Synchronization

public final class TLSChannel: SiteChannel, @unchecked Sendable {
    public let site: String
    public let agentSoftware: String
    private let connection: TLSConnection
    private let lock = NSLock()
    private var nextID = 0
    private let maxLineBytes: Int
    private var kept: [Receipt] = []

    /// Connects to the agent of `site` at host:port, verifying its certificate
    /// for `serverName`, and checks that the agent says it is that site.
    public init(site: String, host: String, port: Int, context: TLSContext, serverName: String,
                timeout: Double = 30, maxLineBytes: Int = defaultMaxLineBytes) throws {
        self.site = site
        self.maxLineBytes = maxLineBytes
        do {
            connection = try TLSConnection.connect(host: host, port: port, context: context, serverName: serverName,
                                                   timeout: timeout, ioTimeout: 600)
        } catch { throw SiteFailure(site: site, message: "cannot connect to \(host):\(port): \(error)") }
        do {
            guard let line = try connection.readLine(maxBytes: maxLineBytes) else {
                throw SiteFailure(site: site, message: "the agent closed the connection before its hello")
            }
            let hello: Hello
            if let h = try? LineCodec.decodeHello(line) { hello = h }
            else if case .error(let e)? = try? LineCodec.decodeReply(line).reply {
                throw SiteFailure(site: site, message: "the agent refused the connection: \(e.message)", code: e.code)
            } else { throw SiteFailure(site: site, message: "the agent's first line is not a hello") }
            guard hello.protocolVersion == protocolVersion else {
                throw SiteFailure(site: site, message: ProtocolError.versionMismatch(ours: protocolVersion, theirs: hello.protocolVersion).description)
            }
            guard hello.site == site else {
                throw SiteFailure(site: site, message: "the agent at \(host):\(port) says it is site \"\(hello.site ?? "?")\"; check the sites file")
            }
            agentSoftware = hello.software
            try connection.writeLine(LineCodec.encode(Hello(role: "coordinator", site: nil, software: fedmixVersion)))
        } catch let f as SiteFailure { connection.close(); throw f } catch {
            connection.close()
            throw SiteFailure(site: site, message: "hello failed: \(error)")
        }
    }

    public func call(_ request: Request) throws -> Reply {
        lock.lock(); defer { lock.unlock() }
        nextID += 1
        let id = nextID
        do {
            do { try connection.writeLine(LineCodec.encode(request, id: id)) } catch let e as TLSError {
                // The agent may have refused the request (e.g. its line limit) and
                // closed: its fatal error answer says why, so prefer it.
                if let line = try? connection.readLine(maxBytes: maxLineBytes),
                   case .error(let reply)? = try? LineCodec.decodeReply(line).reply {
                    throw SiteFailure(site: site, message: reply.message, code: reply.code)
                }
                throw e
            }
            guard let line = try connection.readLine(maxBytes: maxLineBytes) else {
                throw SiteFailure(site: site, message: "the agent closed the connection (the site disappeared mid-fit)")
            }
            let (rid, reply) = try LineCodec.decodeReply(line)
            try keepReceipt(of: line, for: request)
            if case .error(let e) = reply, e.fatal { return reply }
            guard rid == id else { throw SiteFailure(site: site, message: "answered request \(rid) instead of \(id)") }
            return reply
        } catch let f as SiteFailure { throw f } catch let e as TLSError {
            throw SiteFailure(site: site, message: "connection lost: \(e)")
        }
    }

    /// Checks the receipt an answer carries against the certificate the
    /// agent presented in this connection's handshake, and keeps it. An
    /// agent without an audit log sends none. A receipt that does not
    /// verify is a failure of the site: its log could not be held to it.
    private func keepReceipt(of line: String, for request: Request) throws {
        guard let receipt = Receipt.carried(by: line) else { return }
        guard receipt.site == site, receipt.certificate == connection.peerFingerprintSHA256,
              connection.verifyPeerSignature(receipt.signatureBytes, over: receipt.signedBytes) else {
            throw SiteFailure(site: site, message: "the agent's receipt for its audit entry \(receipt.seq) does not verify against its TLS certificate; the site's audit log cannot be checked against this answer")
        }
        kept.append(receipt)
        if let session = request.session { ReceiptLedger.shared.add(receipt, site: site, session: session) }
    }

    /// Every verified receipt this channel received, in order.
    public var receipts: [Receipt] { lock.lock(); defer { lock.unlock() }; return kept }

    public var bytesSent: Int { lock.lock(); defer { lock.unlock() }; return connection.bytesWritten }
    public var bytesReceived: Int { lock.lock(); defer { lock.unlock() }; return connection.bytesRead }
    public func close() { connection.close() }
}

/// The coordinator's sites file: its TLS identity and the sites to reach.
public struct SitesFile: Sendable, Equatable {
    public struct Site: Sendable, Equatable {
        public var name: String
        public var host: String
        public var port: Int
        /// Name on the agent's certificate (default: the host).
        public var serverName: String
        public init(name: String, host: String, port: Int, serverName: String) {
            self.name = name; self.host = host; self.port = port; self.serverName = serverName
        }
    }
    public var identity: TLSIdentity
    public var sites: [Site]
    /// Sites listed but left out of every analysis (`exclude_sites` in the
    /// file, or `excluding(_:reason:)` for --exclude-sites): they are not
    /// contacted, and every result names them with the reason.
    public var exclusions: [SiteExclusion] = []

    public init(identity: TLSIdentity, sites: [Site], exclusions: [SiteExclusion] = []) {
        self.identity = identity; self.sites = sites; self.exclusions = exclusions
    }

    /// The same file with `names` left out too. Every name must be a listed
    /// site, and at least one site must remain.
    public func excluding(_ names: [String], reason: String) throws -> SitesFile {
        var copy = self
        for n in names {
            guard sites.contains(where: { $0.name == n }) else {
                throw UsageError("--exclude-sites: no site \"\(n)\" in the sites file (sites: \(sites.map(\.name).joined(separator: ", ")))")
            }
            if !copy.exclusions.contains(where: { $0.site == n }) { copy.exclusions.append(SiteExclusion(site: n, reason: reason)) }
        }
        guard copy.sites.contains(where: { s in !copy.exclusions.contains { $0.site == s.name } }) else {
            throw UsageError("every site of the sites file would be excluded; nothing would be fitted")
        }
        return copy
    }

    public static func load(path: String) throws -> SitesFile {
        guard let data = FileManager.default.contents(atPath: path) else {
            throw UsageError("\(path): cannot read the sites file")
        }
        func fail(_ m: String) -> UsageError { UsageError("\(path): \(m)") }
        guard let root = try? JSONSerialization.jsonObject(with: data) as? [String: Any] else { throw fail("not a JSON object") }
        let base = URL(fileURLWithPath: path).deletingLastPathComponent()
        func resolve(_ p: String) -> String { p.hasPrefix("/") ? p : base.appendingPathComponent(p).standardizedFileURL.path }
        guard let tls = root["tls"] as? [String: String], let cert = tls["certificate"], let key = tls["key"], let ca = tls["ca"] else {
            throw fail("\"tls\" must be an object with \"certificate\", \"key\" and \"ca\" paths")
        }
        if let unknown = root.keys.sorted().first(where: { !["tls", "sites", "exclude_sites"].contains($0) }) { throw fail("unknown key \"\(unknown)\"") }
        guard let list = root["sites"] as? [[String: Any]], !list.isEmpty else { throw fail("\"sites\" must be a non-empty array") }
        var sites: [Site] = []
        for (i, s) in list.enumerated() {
            guard let name = s["name"] as? String, let address = s["address"] as? String else {
                throw fail("sites[\(i)] needs \"name\" and \"address\" (HOST:PORT)")
            }
            guard let colon = address.lastIndex(of: ":"), let port = Int(address[address.index(after: colon)...]) else {
                throw fail("sites[\(i)].address must be HOST:PORT")
            }
            var host = String(address[..<colon])
            if host.hasPrefix("[") { host = String(host.dropFirst().dropLast()) }
            if sites.contains(where: { $0.name == name }) { throw fail("site \"\(name)\" is listed twice") }
            sites.append(Site(name: name, host: host, port: port, serverName: (s["server_name"] as? String) ?? host))
        }
        var file = SitesFile(identity: TLSIdentity(certificatePath: resolve(cert), keyPath: resolve(key), caPath: resolve(ca)), sites: sites)
        if let ex = root["exclude_sites"] {
            // ["name", ...] or [{"site": "name", "reason": "why"}, ...]
            guard let list = ex as? [Any] else { throw fail("\"exclude_sites\" must be an array of site names or {\"site\", \"reason\"} objects") }
            for (i, item) in list.enumerated() {
                let name: String, reason: String
                if let n = item as? String { name = n; reason = "excluded in the sites file" }
                else if let o = item as? [String: Any], let n = o["site"] as? String, Set(o.keys).isSubset(of: ["site", "reason"]) {
                    name = n; reason = "excluded in the sites file: " + ((o["reason"] as? String) ?? "no reason given")
                } else { throw fail("exclude_sites[\(i)] must be a site name or {\"site\": NAME, \"reason\": TEXT}") }
                do { file = try file.excluding([name], reason: reason) } catch let e as UsageError { throw fail(e.message.replacingOccurrences(of: "--exclude-sites: ", with: "exclude_sites: ")) }
            }
        }
        return file
    }

    /// Connects to every site in parallel.
    public func connect(timeout: Double = 30) throws -> Federation {
        let context = try TLSContext.client(identity: identity)
        let sites = self.sites.filter { s in !exclusions.contains { $0.site == s.name } }
        let results = Mutex<[Result<SiteChannel, Error>?]>(Array(repeating: nil, count: sites.count))
        let group = DispatchGroup()
        for (i, s) in sites.enumerated() {
            group.enter()
            Thread {
                let r: Result<SiteChannel, Error> = Result {
                    try TLSChannel(site: s.name, host: s.host, port: s.port, context: context, serverName: s.serverName, timeout: timeout)
                }
                results.withLock { $0[i] = r }
                group.leave()
            }.start()
        }
        group.wait()
        let all = results.withLock { $0 }
        var channels: [SiteChannel] = []
        for r in all {
            switch r! {
            case .success(let c): channels.append(c)
            case .failure(let e):
                for c in channels { c.close() }
                for case .success(let c)? in all { c.close() }
                throw e
            }
        }
        return Federation(channels: channels, exclusions: exclusions)
    }
}
