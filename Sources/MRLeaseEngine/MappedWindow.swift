import LinuxFile

/// A span of a tracked file, aligned to `granule`: the unit the engine maps.
struct WindowSpan: Hashable {
    /// 64 MiB: a file's regions inside one such span share one mapping, so registering a
    /// region costs no mmap once its span is mapped, and revoking costs no munmap at all. Virtual
    /// address space is plentiful (a span maps no page until something touches it); the
    /// kernel's `vm.max_map_count` (65 530 by default) is not, and one mapping per region would
    /// hit it well before 100 000 regions.
    static let granule: UInt64 = 64 << 20

    let start: UInt64
    let end: UInt64

    /// The aligned span that covers `[offset, offset+length)`: one granule for a region inside
    /// one, several for a region that crosses a boundary (such a region shares its span only
    /// with regions covering exactly the same granules).
    init(covering offset: UInt64, length: UInt64) {
        start = offset / Self.granule * Self.granule
        let last = offset + max(length, 1) - 1
        end = (last / Self.granule + 1) * Self.granule
    }
}

/// One shared mapping of a `WindowSpan` of a tracked file, which every region of the file inside
/// the span is registered over. Each region's MR still covers exactly its own range: the
/// mapping is only the address space it is registered in. The mapping lives while a region
/// uses it, revoked ones included: a mapping without an MR pins nothing, so a layout change
/// proceeds past it (docs/benchmarks.md, "Revocation order"), and restoration registers into it
/// again without a new mmap.
final class MappedWindow {
    let span: WindowSpan
    let mapping: SharedMapping
    /// Regions registered over this window (registered or revoked, not yet gone).
    @exclusivity(unchecked) var users = 0

    init(span: WindowSpan, mapping: SharedMapping) {
        self.span = span
        self.mapping = mapping
    }

    /// Where file offset `offset` (inside the span) is mapped.
    func address(of offset: UInt64) -> UnsafeMutableRawPointer {
        mapping.base + Int(offset - span.start)
    }
}
