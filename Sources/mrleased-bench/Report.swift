/// Everything one run measured, for `--json` and for the verdicts against the issue's targets.
struct Report: Codable {
    var label: String
    var kernel: String
    var guest: Bool
    var directory: String
    var registrar: String
    var stub: Bool
    var filesystem = ""
    var breakCases: [BreakCase] = []
    var registrationCases: [RegistrationCase] = []
    var breakCensus = ""
    var registrationCensus = ""
    var roundTrips: [RoundTripCase] = []
    var daemonRegistration: DaemonRegistrationCase?
    var verdicts: [String] = []

    /// The issue's acceptance targets: with one region, the median blocked time is within 2×
    /// the immediate-unlock baseline; with 10 000 regions it stays well under one second,
    /// read here as p90 under 500 ms and no break over one second.
    mutating func judge() {
        let caveat = stub ? " [stub registrar: lease path only, not an RDMA figure]" : ""
        if let one = breakCases.first(where: { $0.regions == 1 && $0.acknowledged }) {
            let holds = one.engineMedianMS <= 2 * one.baselineMedianMS
            verdicts.append("target regions=1 median within 2x baseline: \(holds ? "HOLDS" : "MISSED") (ratio \(ratio(one.engineMedianMS, one.baselineMedianMS)))\(caveat)")
        }
        if let many = breakCases.first(where: { $0.regions == 10_000 && $0.acknowledged }) {
            let holds = many.engineP90MS < 500 && many.engineMaxMS < 1000
            verdicts.append("target regions=10000 well under 1 s (p90 < 500 ms, max < 1 s): \(holds ? "HOLDS" : "MISSED") (median \(ms(many.engineMedianMS)) ms, p90 \(ms(many.engineP90MS)) ms, max \(ms(many.engineMaxMS)) ms)\(caveat)")
        }
        // Issue 4: registration through the daemon within 1.5× a direct engine call (2 MiB).
        if let row = daemonRegistration {
            let holds = row.ratio <= 1.5
            verdicts.append("target daemon register within 1.5x direct Engine.register (\(row.length >> 20) MiB, median): \(holds ? "HOLDS" : "MISSED") (ratio \(String(format: "%.2f", row.ratio)))")
            let batchHolds = row.batchRatio <= 1.5
            verdicts.append("target daemon register-batch of \(row.batchSize) within 1.5x direct Engine.register per region (\(row.length >> 20) MiB, median): \(batchHolds ? "HOLDS" : "MISSED") (ratio \(String(format: "%.2f", row.batchRatio)))")
        }
    }
}
