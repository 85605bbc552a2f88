/* Little-endian byte assembly for the calibration container: no alignment or endianness
 * assumption, the same helpers for every section. */
#ifndef KVS_CALIB_BYTES_H
#define KVS_CALIB_BYTES_H
#include <stdint.h>
#include <string.h>

static inline void put32(uint8_t *p, uint32_t v) {
    for (int i = 0; i < 4; i++) p[i] = (uint8_t)(v >> (8 * i));
}
static inline void put64(uint8_t *p, uint64_t v) {
    for (int i = 0; i < 8; i++) p[i] = (uint8_t)(v >> (8 * i));
}
static inline uint32_t get32(const uint8_t *p) {
    uint32_t v = 0;
    for (int i = 0; i < 4; i++) v |= (uint32_t)p[i] << (8 * i);
    return v;
}
static inline uint64_t get64(const uint8_t *p) {
    uint64_t v = 0;
    for (int i = 0; i < 8; i++) v |= (uint64_t)p[i] << (8 * i);
    return v;
}
static inline void putf64(uint8_t *p, double x) {
    uint64_t v;
    memcpy(&v, &x, 8);
    put64(p, v);
}
static inline double getf64(const uint8_t *p) {
    const uint64_t v = get64(p);
    double x;
    memcpy(&x, &v, 8);
    return x;
}
static inline void putf32(uint8_t *p, float x) {
    uint32_t v;
    memcpy(&v, &x, 4);
    put32(p, v);
}
static inline float getf32(const uint8_t *p) {
    const uint32_t v = get32(p);
    float x;
    memcpy(&x, &v, 4);
    return x;
}
static inline size_t pad8(size_t n) { return (n + 7) / 8 * 8; }
#endif
