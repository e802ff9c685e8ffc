// test_main.cpp — runs the registered tests of one group (argv[1]) or all of them, and ends
// with the plain "N passed, N failed" line.  Exit code 0 only if nothing failed.
#include <chrono>

#include "test_util.h"

Stats& stats() {
    static Stats s;
    return s;
}

std::vector<TestCase>& registry() {
    static std::vector<TestCase> r;
    return r;
}

int main(int argc, char** argv) {
    const std::string group = argc > 1 ? argv[1] : "";
    int ran = 0;
    for (const TestCase& t : registry()) {
        if (!group.empty() && group != t.group) continue;
        const int failed_before = stats().failed;
        const auto t0 = std::chrono::steady_clock::now();
        t.fn();
        const double ms = std::chrono::duration<double, std::milli>(std::chrono::steady_clock::now() - t0).count();
        printf("%s %s.%s (%.0f ms)\n", stats().failed == failed_before ? "ok  " : "FAIL", t.group, t.name, ms);
        fflush(stdout);
        ++ran;
    }
    if (ran == 0) {
        printf("no test in group '%s'\n", group.c_str());
        return 2;
    }
    printf("checks: %d passed, %d failed\n", stats().passed, stats().failed);
    return stats().failed == 0 ? 0 : 1;
}
