/* Replays a fuzz target without libFuzzer: every file of the corpus directories given on the
 * command line, then deterministic mutations of each (byte flips, truncations, splices). */
#include <dirent.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

static uint64_t g_state = 0x9e3779b97f4a7c15ull;
static uint64_t next(void) {
    g_state ^= g_state << 13;
    g_state ^= g_state >> 7;
    g_state ^= g_state << 17;
    return g_state;
}

static long run_file(const char *path) {
    FILE *f = fopen(path, "rb");
    if (!f) return 0;
    uint8_t buf[4096];
    size_t n = fread(buf, 1, sizeof buf, f);
    fclose(f);
    LLVMFuzzerTestOneInput(buf, n);
    long runs = 1;
    static const char dict[] = "=,kvintfpq0123456789_-.eanh ";
    for (int m = 0; m < 2000; m++) {
        uint8_t mut[4096];
        size_t len = n;
        memcpy(mut, buf, n);
        const int edits = 1 + (int)(next() % 4);
        for (int e = 0; e < edits && len > 0; e++) {
            const size_t at = next() % len;
            switch (next() % 4) {
            case 0: mut[at] = (uint8_t)next(); break;
            case 1: mut[at] = (uint8_t)dict[next() % (sizeof dict - 1)]; break;
            case 2: len = at; break;
            default:
                if (len < sizeof mut - 1) {
                    memmove(mut + at + 1, mut + at, len - at);
                    mut[at] = (uint8_t)dict[next() % (sizeof dict - 1)];
                    len++;
                }
            }
        }
        LLVMFuzzerTestOneInput(mut, len);
        runs++;
    }
    return runs;
}

int main(int argc, char **argv) {
    long runs = 0, files = 0;
    for (int i = 1; i < argc; i++) {
        DIR *d = opendir(argv[i]);
        if (!d) {
            fprintf(stderr, "replay: cannot open corpus %s\n", argv[i]);
            return 1;
        }
        struct dirent *e;
        while ((e = readdir(d))) {
            if (e->d_name[0] == '.') continue;
            char path[4096];
            snprintf(path, sizeof path, "%s/%s", argv[i], e->d_name);
            runs += run_file(path);
            files++;
        }
        closedir(d);
    }
    printf("replay: %ld files, %ld inputs, no crash\n", files, runs);
    return files > 0 ? 0 : 1;
}
