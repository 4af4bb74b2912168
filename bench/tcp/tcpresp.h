/* bench/tcp/tcpresp.h: what tcpresp answers after the hello (and to an HTTP
 * request, in its http mode), for the load generators that check it
 * (bench/tcp/tcpload.c its length, bench/soak's soakload.c every byte). */
#ifndef MOAT_BENCH_TCPRESP_H
#define MOAT_BENCH_TCPRESP_H

#define TCPRESP_REPLY     "moat-bench-reply-0123456789abcd\n"
#define TCPRESP_REPLY_LEN (sizeof TCPRESP_REPLY - 1) /* 32 */

/* What `tcpresp PORT http` answers to every request head. */
#define TCPRESP_HTTP                                                                               \
    "HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\nContent-Length: 32\r\n\r\n" TCPRESP_REPLY

#endif
