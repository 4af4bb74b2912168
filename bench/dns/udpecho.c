/* bench/dns/udpecho.c: the physical limit row of bench/dns (issue 15).
 *
 * The least a UDP server on this kernel can do per datagram: one blocking
 * recvmmsg (MSG_WAITFORONE: it returns as soon as one datagram is there, with
 * every other one already queued, up to the batch) and one sendmmsg of the
 * same bytes back to each sender, with the QR bit set so that dnsload counts
 * each one as an answer (it matches on length >= 12, QR, socket and ID; the
 * RCODE of a query is 0, so the answer is NOERROR). No parse, no decision,
 * no event loop: whatever a DNS server spends above this row is its own.
 *
 * usage: udpecho ADDR PORT [BATCH=64]. Runs until killed. Loopback benches
 * only: it answers whoever writes to it.
 */
#include <arpa/inet.h>
#include <errno.h>
#include <netinet/in.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#define UE_MAX_BATCH 256
#define UE_SLOT      4096

static struct mmsghdr ue_msgs[UE_MAX_BATCH];
static struct iovec ue_iov[UE_MAX_BATCH];
static struct sockaddr_storage ue_names[UE_MAX_BATCH];
static uint8_t ue_bufs[UE_MAX_BATCH][UE_SLOT];

int main(int argc, char **argv)
{
    if (argc < 3) {
        fprintf(stderr, "usage: udpecho ADDR PORT [BATCH=64]\n");
        return 2;
    }
    unsigned batch = argc > 3 ? (unsigned)strtoul(argv[3], NULL, 10) : 64;
    unsigned long port = strtoul(argv[2], NULL, 10);
    if (batch == 0 || batch > UE_MAX_BATCH || port == 0 || port > 65535) {
        fprintf(stderr, "udpecho: bad port or batch\n");
        return 2;
    }
    struct sockaddr_storage ss;
    socklen_t sl;
    memset(&ss, 0, sizeof ss);
    struct sockaddr_in *s4 = (struct sockaddr_in *)&ss;
    struct sockaddr_in6 *s6 = (struct sockaddr_in6 *)&ss;
    if (inet_pton(AF_INET, argv[1], &s4->sin_addr) == 1) {
        s4->sin_family = AF_INET;
        s4->sin_port = htons((uint16_t)port);
        sl = sizeof *s4;
    } else if (inet_pton(AF_INET6, argv[1], &s6->sin6_addr) == 1) {
        s6->sin6_family = AF_INET6;
        s6->sin6_port = htons((uint16_t)port);
        sl = sizeof *s6;
    } else {
        fprintf(stderr, "udpecho: bad address %s\n", argv[1]);
        return 2;
    }
    int fd = socket(ss.ss_family, SOCK_DGRAM | SOCK_CLOEXEC, 0);
    int buf = 4 << 20;
    if (fd < 0 || bind(fd, (struct sockaddr *)&ss, sl) != 0) {
        perror("udpecho: socket/bind");
        return 1;
    }
    /* The same receive buffer moat asks for. */
    (void)setsockopt(fd, SOL_SOCKET, SO_RCVBUF, &buf, sizeof buf);

    for (;;) {
        for (unsigned i = 0; i < batch; i++) {
            ue_iov[i].iov_base = ue_bufs[i];
            ue_iov[i].iov_len = UE_SLOT;
            struct msghdr *m = &ue_msgs[i].msg_hdr;
            m->msg_name = &ue_names[i];
            m->msg_namelen = sizeof ue_names[i];
            m->msg_iov = &ue_iov[i];
            m->msg_iovlen = 1;
            m->msg_control = NULL;
            m->msg_controllen = 0;
            m->msg_flags = 0;
        }
        int got = recvmmsg(fd, ue_msgs, batch, MSG_WAITFORONE, NULL);
        if (got <= 0) {
            if (got < 0 && errno != EINTR && errno != EAGAIN)
                perror("udpecho: recvmmsg");
            continue;
        }
        for (int i = 0; i < got; i++) {
            if (ue_msgs[i].msg_len >= 3)
                ue_bufs[i][2] |= 0x80; /* QR: a response (RFC 1035 §4.1.1) */
            ue_iov[i].iov_len = ue_msgs[i].msg_len;
        }
        for (int sent = 0; sent < got;) {
            int r = sendmmsg(fd, ue_msgs + sent, (unsigned)(got - sent), 0);
            if (r > 0)
                sent += r;
            else if (r < 0 && errno == EINTR)
                continue;
            else
                sent++; /* this destination failed: skip it */
        }
    }
}
