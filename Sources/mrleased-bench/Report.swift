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
    var scale: ScaleCase?
    var firstAccess: FirstAccessCase?
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
        // Issue 11: the floor is the immediate-unlock baseline plus a bare ibv_dereg_mr of as
        // many MRs, both measured in the same run.
        if let one = breakCases.first(where: { $0.regions == 1 && $0.acknowledged }) {
            let holds = one.engineMedianMS <= 1.3 * one.baselineMedianMS
            verdicts.append("target regions=1 break-to-unlock within 1.3x the immediate-unlock floor: \(holds ? "HOLDS" : "MISSED") (ratio \(ratio(one.engineMedianMS, one.baselineMedianMS)))\(caveat)")
        }
        if let many = breakCases.first(where: { $0.regions == 10_000 && $0.acknowledged }), let bare = many.bareDeregisterMedianMS {
            let floor = many.baselineMedianMS + bare
            let holds = many.engineMedianMS <= 1.2 * floor
            verdicts.append("target regions=10000 break-to-unlock within 1.2x (immediate-unlock floor + bare ibv_dereg_mr of 10000 MRs): \(holds ? "HOLDS" : "MISSED")"
                + " (engine median \(ms(many.engineMedianMS)) ms, floor \(ms(many.baselineMedianMS)) + \(ms(bare)) ms, ratio \(ratio(many.engineMedianMS, floor)))")
        }
        for row in registrationCases {
            let holds = row.ratio >= 0.8
            let size = row.length >= 1 << 20 ? "\(row.length >> 20) MiB" : "\(row.length >> 10) KiB"
            verdicts.append("target registration rate \(row.regions) x \(size) at least 0.8x plain ibv_reg_mr, Engine.register per call: \(holds ? "HOLDS" : "MISSED") (ratio \(String(format: "%.2f", row.ratio)))")
            verdicts.append("target registration rate \(row.regions) x \(size) at least 0.8x plain ibv_reg_mr, as register-batch (fd inspected once per 64): \(row.batchRatio >= 0.8 ? "HOLDS" : "MISSED") (ratio \(String(format: "%.2f", row.batchRatio)))")
        }
        for trip in roundTrips {
            let holds = trip.ratio <= 1.5
            verdicts.append("target daemon stats round trip (\(trip.placement)) within 1.5x the echo process: \(holds ? "HOLDS" : "MISSED") (ratio \(String(format: "%.2f", trip.ratio)))")
        }
        if let row = scale {
            let n = row.regions
            verdicts.append("target registration rate at \(n) within 0.8x of the rate at 1000: \(row.rateRatio >= 0.8 ? "HOLDS" : "MISSED") (ratio \(String(format: "%.2f", row.rateRatio)))")
            verdicts.append("target stats round trip with \(n) regions within 1.2x of none: \(row.statsRatio <= 1.2 ? "HOLDS" : "MISSED") (ratio \(String(format: "%.2f", row.statsRatio)))")
            verdicts.append("target one-owner list round trip with \(n) regions within 1.2x of none: \(row.listRatio <= 1.2 ? "HOLDS" : "MISSED") (ratio \(String(format: "%.2f", row.listRatio)))")
            verdicts.append("target daemon memory per region at most 1 KiB (anonymous RSS growth / regions): \(row.anonBytesPerRegion <= 1024 ? "HOLDS" : "MISSED") (\(String(format: "%.0f", row.anonBytesPerRegion)) B; all of RSS \(String(format: "%.0f", row.rssBytesPerRegion)) B)")
            let back = row.released.fds == row.idle.fds && row.released.leases == row.idle.leases && row.released.mrs == row.idle.mrs
                && Double(row.released.rssKiB) <= 1.1 * Double(row.idle.rssKiB)
                && row.end.fds == row.start.fds && row.end.leases == 0 && (row.end.mrs ?? 0) == 0
                && Double(row.end.rssKiB) <= 1.1 * Double(row.start.rssKiB)
            verdicts.append("target everything released after the clients disconnect (fds, MRs, leases back; RSS within 10%): \(back ? "HOLDS" : "MISSED")"
                + " (RSS: probe only \(row.idle.rssKiB) KiB -> after \(row.released.rssKiB) KiB; fresh \(row.start.rssKiB) KiB -> end \(row.end.rssKiB) KiB)")
            if row.capped { verdicts.append("note: the device's max_mr \(row.maxMR) capped the run at \(n) regions") }
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
