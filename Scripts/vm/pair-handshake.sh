# Sourced by the scripts that run in both guests of `Scripts/vm-test --pair` (Scripts/bench-peer,
# Scripts/demo-pair-guest): their turns, through the pair's shared folder. Set `pair_dir` (the
# folder, $MRLEASED_PAIR_SHARED) and `pair_prefix` (one per script, so two never collide) first.

# pair_put NAME: hands the other guest standard input under NAME, whole (written aside, then
# renamed: the other side never reads half of it).
pair_put() { cat >"$pair_dir/$pair_prefix.$1.tmp" && mv "$pair_dir/$pair_prefix.$1.tmp" "$pair_dir/$pair_prefix.$1"; }

# pair_take NAME SECONDS: what the other guest put under NAME, once it is there; status 1 when
# it was not within SECONDS (the caller says what that means).
pair_take() {
  local i
  for ((i = 0; i < $2 * 10; i++)); do
    [[ -e $pair_dir/$pair_prefix.$1 ]] && { cat "$pair_dir/$pair_prefix.$1"; return 0; }
    sleep 0.1
  done
  return 1
}
