# Sourced by run.sh and ci.sh: libFuzzer options that suit each target (structured
# targets start with long inputs).
target_options() {
    case "$1" in
        ops) echo "-max_len=2048" ;;
        open_corrupt) echo "-max_len=400 -len_control=0" ;;
        crash) echo "-max_len=600 -len_control=0" ;;
        page_decode) echo "-max_len=9000" ;;
    esac
}
