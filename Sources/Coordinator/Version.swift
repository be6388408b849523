/// The software version reported by `--version` and in the protocol hello.
public let fedmixVersion = "0.1.0"
