import Foundation

/// Metrics text as a real parser reads it: Debian's python3-prometheus-client (installed by
/// Scripts/install-deps), whose OpenMetrics parser is strict (`# EOF`, histogram `+Inf` and
/// `_count` agreeing, buckets in order, units matching names) and whose Prometheus 0.0.4
/// parser reads what node_exporter's textfile collector reads.
public enum MetricsParser: String {
    case openMetrics = "prometheus_client.openmetrics.parser"
    case prometheus = "prometheus_client.parser"

    public struct Sample: Equatable {
        public var name: String
        public var labels: [String: String]
        public var value: Double
    }

    public struct Family {
        public var name: String
        public var type: String
        public var unit: String
        public var samples: [Sample]

        /// The one sample named `name` with exactly `labels`.
        public func value(_ name: String, _ labels: [String: String] = [:]) -> Double? {
            samples.first { $0.name == name && $0.labels == labels }?.value
        }
    }

    /// Debian's interpreter, by path: the one python3-prometheus-client installs into (a
    /// python3 earlier on PATH, pyenv's say, does not see it).
    static let python = "/usr/bin/python3"

    static let script = """
    import json, sys, importlib
    parser = importlib.import_module(sys.argv[1])
    families = [{"name": f.name, "type": f.type, "unit": getattr(f, "unit", ""),
                 "samples": [{"name": s.name, "labels": s.labels, "value": s.value} for s in f.samples]}
                for f in parser.text_string_to_metric_families(sys.stdin.read())]
    json.dump(families, sys.stdout)
    """

    /// The families `text` parses into, by name; throws with the parser's own message when it
    /// refuses the text.
    public func parse(_ text: String) throws -> [String: Family] {
        let input = try ScratchDirectory(name: "metrics")
        let path = input.path + "/metrics.txt"
        try text.write(toFile: path, atomically: false, encoding: .utf8)
        let run = try Subprocess.run("/bin/sh", ["-c", "exec \"$0\" -c \"$1\" \"$2\" < \"$3\"", Self.python, Self.script, rawValue, path])
        guard run.status == 0 else {
            if run.stderr.contains("No module named 'prometheus_client'") {
                throw TestFailure("\(Self.python) has no prometheus_client: run Scripts/install-deps (python3-prometheus-client)")
            }
            throw TestFailure("\(rawValue) refused the metrics text: \(run.stderr)\n--- text ---\n\(text)")
        }
        struct Decoded: Decodable {
            struct DecodedSample: Decodable { var name: String; var labels: [String: String]; var value: Double }
            var name: String
            var type: String
            var unit: String
            var samples: [DecodedSample]
        }
        let decoded = try JSONDecoder().decode([Decoded].self, from: Data(run.stdout.utf8))
        var families: [String: Family] = [:]
        for family in decoded {
            families[family.name] = Family(name: family.name, type: family.type, unit: family.unit,
                                           samples: family.samples.map { Sample(name: $0.name, labels: $0.labels, value: $0.value) })
        }
        return families
    }
}
