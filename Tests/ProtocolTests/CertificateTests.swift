import Foundation
import XCTest
@testable import Protocol
#if canImport(Glibc)
import Glibc
#endif

final class CertificateTests: XCTestCase {
    private var directory = ""

    override func setUpWithError() throws {
        directory = FileManager.default.temporaryDirectory
            .appendingPathComponent("fedmix-cert-tests-\(UUID().uuidString)").path
    }

    override func tearDownWithError() throws {
        try? FileManager.default.removeItem(atPath: directory)
    }

    private func mode(_ path: String) -> Int {
        var st = stat()
        XCTAssertEqual(stat(path, &st), 0, "stat \(path)")
        return Int(st.st_mode & 0o777)
    }

    func testAuthorityAndLeafFilesAndModes() throws {
        let ca = directory + "/ca"
        try Certificates.createAuthority(directory: ca)
        XCTAssertEqual(mode(ca + "/ca.key"), 0o600)
        XCTAssertEqual(mode(ca + "/ca.pem"), 0o644)
        XCTAssertEqual(mode(ca), 0o700, "a created CA directory is private")

        try Certificates.issue(caDirectory: ca, name: "site-a", outDirectory: directory + "/site-a")
        XCTAssertEqual(mode(directory + "/site-a/key.pem"), 0o600)
        XCTAssertEqual(mode(directory + "/site-a/cert.pem"), 0o644)
        let leftovers = try FileManager.default.contentsOfDirectory(atPath: directory + "/site-a")
        XCTAssertEqual(Set(leftovers), ["key.pem", "cert.pem"], "no temporary files are left")

        let key = try String(contentsOfFile: directory + "/site-a/key.pem", encoding: .utf8)
        XCTAssertTrue(key.hasPrefix("-----BEGIN PRIVATE KEY-----"))

        // Re-issuing (rotation) replaces both files and keeps the key private.
        let before = try Certificates.inspect(certificatePath: directory + "/site-a/cert.pem")
        try Certificates.issue(caDirectory: ca, name: "site-a", outDirectory: directory + "/site-a")
        let after = try Certificates.inspect(certificatePath: directory + "/site-a/cert.pem")
        XCTAssertNotEqual(before.fingerprintSHA256, after.fingerprintSHA256)
        XCTAssertNotEqual(before.serialNumber, after.serialNumber)
        XCTAssertEqual(mode(directory + "/site-a/key.pem"), 0o600)
    }

    func testInspectReturnsNamesDatesAndFingerprint() throws {
        let ca = directory + "/ca"
        try Certificates.createAuthority(directory: ca, commonName: "Test Hospital CA", days: 100)
        try Certificates.issue(caDirectory: ca, name: "site-a.example.org", outDirectory: directory + "/a", days: 30)
        let now = Date()

        let caInfo = try Certificates.inspect(certificatePath: ca + "/ca.pem")
        XCTAssertEqual(caInfo.commonName, "Test Hospital CA")
        XCTAssertTrue(caInfo.isCA)
        XCTAssertEqual(caInfo.subject, caInfo.issuer, "a CA certificate is self-signed")
        XCTAssertEqual(caInfo.notAfter.timeIntervalSince(now) / 86400, 100, accuracy: 0.01)

        let info = try Certificates.inspect(certificatePath: directory + "/a/cert.pem")
        XCTAssertEqual(info.commonName, "site-a.example.org")
        XCTAssertEqual(info.subject, "CN=site-a.example.org")
        XCTAssertEqual(info.issuer, "CN=Test Hospital CA")
        XCTAssertEqual(info.dnsNames, ["site-a.example.org"])
        XCTAssertEqual(info.ipAddresses, [])
        XCTAssertFalse(info.isCA)
        XCTAssertEqual(info.notAfter.timeIntervalSince(now) / 86400, 30, accuracy: 0.01)
        XCTAssertEqual(info.notBefore.timeIntervalSince(now), -3600, accuracy: 60, "backdated one hour for clock skew")
        XCTAssertTrue(info.isValid(at: now))
        XCTAssertEqual(info.fingerprintSHA256.count, 64)
        XCTAssertTrue(info.fingerprintSHA256.allSatisfy { "0123456789abcdef".contains($0) })
        XCTAssertFalse(info.serialNumber.isEmpty)
    }

    func testIPAddressNameGetsDNSAndIPAltNames() throws {
        let ca = directory + "/ca"
        try Certificates.createAuthority(directory: ca)
        try Certificates.issue(caDirectory: ca, name: "127.0.0.1", outDirectory: directory + "/ip")
        let info = try Certificates.inspect(certificatePath: directory + "/ip/cert.pem")
        XCTAssertEqual(info.dnsNames, ["127.0.0.1"])
        XCTAssertEqual(info.ipAddresses, ["127.0.0.1"])

        try Certificates.issue(caDirectory: ca, name: "::1", outDirectory: directory + "/ip6")
        XCTAssertEqual(try Certificates.inspect(certificatePath: directory + "/ip6/cert.pem").ipAddresses, ["::1"])
    }

    func testAlreadyExpiredCertificateForTests() throws {
        let ca = directory + "/ca"
        try Certificates.createAuthority(directory: ca)
        try Certificates.issue(caDirectory: ca, name: "old", outDirectory: directory + "/old",
                               days: -1, notBeforeOffsetDays: -10)
        let info = try Certificates.inspect(certificatePath: directory + "/old/cert.pem")
        let now = Date()
        XCTAssertFalse(info.isValid(at: now))
        XCTAssertEqual(info.notAfter.timeIntervalSince(now) / 86400, -1, accuracy: 0.01)
        XCTAssertEqual(info.notBefore.timeIntervalSince(now) / 86400, -10, accuracy: 0.1)

        XCTAssertThrowsError(try Certificates.issue(caDirectory: ca, name: "x", outDirectory: directory + "/x",
                                                    days: -5, notBeforeOffsetDays: -1)) { error in
            guard case CertificateError.invalidValidity = error else { return XCTFail("\(error)") }
        }
    }

    func testRejectsNamesThatCouldInjectAltNames() throws {
        let ca = directory + "/ca"
        try Certificates.createAuthority(directory: ca)
        for bad in ["", "a,DNS:evil.example", "a b", "*.example.org", "a..b", String(repeating: "x", count: 65)] {
            XCTAssertThrowsError(try Certificates.issue(caDirectory: ca, name: bad, outDirectory: directory + "/bad"),
                                 "name \(bad)") { error in
                guard case CertificateError.invalidName = error else { return XCTFail("\(error)") }
            }
        }
        XCTAssertFalse(FileManager.default.fileExists(atPath: directory + "/bad"))
    }

    func testCreateAuthorityRefusesToReplaceAKey() throws {
        let ca = directory + "/ca"
        try Certificates.createAuthority(directory: ca)
        let original = try Certificates.inspect(certificatePath: ca + "/ca.pem")
        XCTAssertThrowsError(try Certificates.createAuthority(directory: ca)) { error in
            XCTAssertEqual(error as? CertificateError, .alreadyExists(path: ca + "/ca.key"))
        }
        XCTAssertEqual(try Certificates.inspect(certificatePath: ca + "/ca.pem"), original)
        try Certificates.createAuthority(directory: ca, overwrite: true)
        XCTAssertNotEqual(try Certificates.inspect(certificatePath: ca + "/ca.pem").fingerprintSHA256,
                          original.fingerprintSHA256)
    }

    func testIssueNamesTheMissingOrWrongCAFile() throws {
        XCTAssertThrowsError(try Certificates.issue(caDirectory: directory + "/nope", name: "a", outDirectory: directory + "/a")) { error in
            XCTAssertEqual(error as? CertificateError, .fileMissing(role: "CA certificate", path: directory + "/nope/ca.pem"))
        }
        // A leaf directory given as the CA.
        let ca = directory + "/ca"
        try Certificates.createAuthority(directory: ca)
        try Certificates.issue(caDirectory: ca, name: "leaf", outDirectory: directory + "/leaf")
        let fake = directory + "/fake"
        try FileManager.default.createDirectory(atPath: fake, withIntermediateDirectories: true)
        try FileManager.default.copyItem(atPath: directory + "/leaf/cert.pem", toPath: fake + "/ca.pem")
        try FileManager.default.copyItem(atPath: directory + "/leaf/key.pem", toPath: fake + "/ca.key")
        XCTAssertThrowsError(try Certificates.issue(caDirectory: fake, name: "a", outDirectory: directory + "/a")) { error in
            XCTAssertEqual(error as? CertificateError, .notCA(path: fake + "/ca.pem"))
        }
        XCTAssertThrowsError(try Certificates.inspect(certificatePath: directory + "/leaf/key.pem")) { error in
            guard case CertificateError.invalidPEM(let role, let path, _) = error else { return XCTFail("\(error)") }
            XCTAssertEqual(role, "certificate")
            XCTAssertEqual(path, directory + "/leaf/key.pem")
        }
    }

    func testSHA256KnownAnswers() {
        XCTAssertEqual(SHA256Digest.hex([]), "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855")
        XCTAssertEqual(SHA256Digest.hex(Array("abc".utf8)), "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad")
        XCTAssertEqual(SHA256Digest.hex("abc"), SHA256Digest.hex(Array("abc".utf8)))
        let million = [UInt8](repeating: UInt8(ascii: "a"), count: 1_000_000)
        XCTAssertEqual(SHA256Digest.hex(million), "cdc76e5c9914fb9281a1c7e284d73e67f1809a48a497200e046d39ccc7112cd0")
        XCTAssertEqual(SHA256Digest.hash(Array("abc".utf8)).count, 32)
        XCTAssertEqual(SHA256Digest.hash(Array("abc".utf8)).prefix(2), [0xba, 0x78])
    }
}
