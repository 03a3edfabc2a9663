# shellcheck shell=bash
# shellcheck disable=SC2034  # sourced: its variables are read by the script that sources it
# shellcheck disable=SC2086  # PODMESH_EXTRA_ARGS is a list of flags: split on purpose
# Proxy pairs of the benchmark (sourced by run.sh). Each start_<pair> starts the
# server-side proxy in $NS_S and the client-side proxy in $NS_C (start_bg), sets SRV_PID /
# CLI_PID (0 = none) and the client-side endpoints EP_IPERF, EP_HTTP, EP_ECHO
# ("host port"), and returns once both sides listen.
#
# Peers listen on plain ports: server side $SRV_IP:<app port + 10000>, client side
# 127.0.0.1:<app port + 20000>. podmesh runs as in a pod: its nft TPROXY table
# intercepts the app ports themselves in the server pod, and its egress listeners
# sit on 127.0.0.2:<app port> in the client pod. All TLS pairs use the same
# certificates ($CERTS/{server,client}), TLS 1.3 only, mutual authentication
# (client chain verified against the mesh CA on the server side, server chain on
# the client side). Client-side peer listeners do no session resumption (every new
# connection is a full handshake), except one extra listener, EP_HTTP_RESUME
# (127.0.0.1:38080 -> the http app), that resumes sessions like podmesh does by default.

APPS=(iperf:5201 http:8080 echo:7000)

RESUME_PORT=38080 # client side, peers: http with session resumption

peer_endpoints() {
    EP_IPERF="127.0.0.1 25201"
    EP_HTTP="127.0.0.1 28080"
    EP_ECHO="127.0.0.1 27000"
    EP_HTTP_RESUME="127.0.0.1 $RESUME_PORT"
}

# --- direct plaintext: no proxies, the client talks to the apps over the veth
start_direct() {
    SRV_PID=0 CLI_PID=0
    EP_IPERF="$SRV_IP 5201" EP_HTTP="$SRV_IP 8080" EP_ECHO="$SRV_IP 7000" EP_HTTP_RESUME=""
}

# --- nginx stream (TLS, and the same pair without TLS: the "null pair")
nginx_conf() { # side tls
    local side=$1 tls=$2 dir=$WORK/nginx-$1-$2 a name port
    mkdir -p "$dir"
    {
        echo "load_module /usr/lib/nginx/modules/ngx_stream_module.so;"
        echo "user root; worker_processes auto; worker_rlimit_nofile 20000; daemon off;"
        echo "pid $dir/nginx.pid; error_log $dir/error.log warn;"
        echo "events { worker_connections 10240; }" # a worker may hold all 2 x 5000 fds of the idle test
        echo "stream {"
        echo "  proxy_half_close on; proxy_timeout 10m;"
        if [ "$tls" = tls ] && [ "$side" = server ]; then
            echo "  ssl_certificate $CERTS/server/certChain.pem; ssl_certificate_key $CERTS/server/key.pem;"
            echo "  ssl_client_certificate $CERTS/server/mesh-ca.pem; ssl_verify_client on;"
            echo "  ssl_protocols TLSv1.3;"
        fi
        if [ "$tls" = tls ] && [ "$side" = client ]; then
            echo "  proxy_ssl on; proxy_ssl_protocols TLSv1.3; proxy_ssl_session_reuse off;"
            echo "  proxy_ssl_certificate $CERTS/client/certChain.pem; proxy_ssl_certificate_key $CERTS/client/key.pem;"
            echo "  proxy_ssl_trusted_certificate $CERTS/client/mesh-ca.pem; proxy_ssl_verify on; proxy_ssl_name server.pmbn;"
        fi
        for a in "${APPS[@]}"; do
            port=${a#*:}
            if [ "$side" = server ]; then
                echo "  server { listen $SRV_IP:$((port + 10000))$([ "$tls" = tls ] && echo ' ssl') backlog=4096; proxy_pass $SRV_IP:$port; }"
            else
                echo "  server { listen 127.0.0.1:$((port + 20000)) backlog=4096; proxy_pass $SRV_IP:$((port + 10000)); }"
            fi
        done
        if [ "$side" = client ]; then
            echo "  server { listen 127.0.0.1:$RESUME_PORT backlog=4096; proxy_pass $SRV_IP:18080;$(
                [ "$tls" = tls ] && echo ' proxy_ssl_session_reuse on;') }"
        fi
        echo "}"
    } >"$dir/nginx.conf"
    echo "$dir/nginx.conf"
}

start_nginx_any() { # tls|plain
    start_bg "nginx-$1-server" "$NS_S" nginx -p "$WORK" -c "$(nginx_conf server "$1")"; SRV_PID=$LAST_PID
    start_bg "nginx-$1-client" "$NS_C" nginx -p "$WORK" -c "$(nginx_conf client "$1")"; CLI_PID=$LAST_PID
    peer_endpoints
    wait_peer_ports
}
start_nginx() { start_nginx_any tls; }
start_null() { start_nginx_any plain; }

# --- stunnel4
stunnel_conf() { # side
    local side=$1 f=$WORK/stunnel-$1.conf a name port
    {
        echo "foreground = yes"
        echo "pid ="
        echo "debug = warning"
        echo "socket = l:TCP_NODELAY=1"
        echo "socket = r:TCP_NODELAY=1"
        for a in "${APPS[@]}"; do
            name=${a%%:*} port=${a#*:}
            echo "[$name]"
            echo "cert = $CERTS/$side/certChain.pem"
            echo "key = $CERTS/$side/key.pem"
            echo "CAfile = $CERTS/$side/mesh-ca.pem"
            echo "verifyChain = yes"
            echo "requireCert = yes"
            echo "sslVersionMin = TLSv1.3"
            if [ "$side" = server ]; then
                echo "accept = $SRV_IP:$((port + 10000))"
                echo "connect = $SRV_IP:$port"
            else
                echo "client = yes"
                echo "sessionResume = no"
                echo "accept = 127.0.0.1:$((port + 20000))"
                echo "connect = $SRV_IP:$((port + 10000))"
            fi
        done
        if [ "$side" = client ]; then
            echo "[http-resume]"
            echo "cert = $CERTS/client/certChain.pem"
            echo "key = $CERTS/client/key.pem"
            echo "CAfile = $CERTS/client/mesh-ca.pem"
            echo "verifyChain = yes"
            echo "sslVersionMin = TLSv1.3"
            echo "client = yes"
            echo "accept = 127.0.0.1:$RESUME_PORT"
            echo "connect = $SRV_IP:18080"
        fi
    } >"$f"
    echo "$f"
}

start_stunnel() {
    start_bg stunnel-server "$NS_S" stunnel4 "$(stunnel_conf server)"; SRV_PID=$LAST_PID
    start_bg stunnel-client "$NS_C" stunnel4 "$(stunnel_conf client)"; CLI_PID=$LAST_PID
    peer_endpoints
    wait_peer_ports
}

# --- haproxy (tcp mode)
haproxy_conf() { # side
    local side=$1 f=$WORK/haproxy-$1.cfg a name port
    {
        echo "global"
        echo "  maxconn 9000"
        echo "defaults"
        echo "  mode tcp"
        echo "  timeout connect 5s"
        echo "  timeout client 10m"
        echo "  timeout server 10m"
        for a in "${APPS[@]}"; do
            name=${a%%:*} port=${a#*:}
            echo "listen $name"
            if [ "$side" = server ]; then
                echo "  bind $SRV_IP:$((port + 10000)) ssl crt $CERTS/server/haproxy.pem ca-file $CERTS/server/mesh-ca.pem verify required ssl-min-ver TLSv1.3"
                echo "  server app $SRV_IP:$port"
            else
                echo "  bind 127.0.0.1:$((port + 20000))"
                echo "  server mesh $SRV_IP:$((port + 10000)) ssl crt $CERTS/client/haproxy.pem ca-file $CERTS/client/mesh-ca.pem verify required ssl-min-ver TLSv1.3 no-ssl-reuse"
            fi
        done
        if [ "$side" = client ]; then
            echo "listen http-resume"
            echo "  bind 127.0.0.1:$RESUME_PORT"
            echo "  server mesh $SRV_IP:18080 ssl crt $CERTS/client/haproxy.pem ca-file $CERTS/client/mesh-ca.pem verify required ssl-min-ver TLSv1.3"
        fi
    } >"$f"
    echo "$f"
}

start_haproxy() {
    start_bg haproxy-server "$NS_S" haproxy -db -f "$(haproxy_conf server)"; SRV_PID=$LAST_PID
    start_bg haproxy-client "$NS_C" haproxy -db -f "$(haproxy_conf client)"; CLI_PID=$LAST_PID
    peer_endpoints
    wait_peer_ports
}

wait_peer_ports() {
    local a port
    for a in "${APPS[@]}"; do
        port=${a#*:}
        wait_listen "$NS_S" $((port + 10000)) "$SRV_PID" || return 1
        wait_listen "$NS_C" $((port + 20000)) "$CLI_PID" || return 1
    done
    wait_listen "$NS_C" "$RESUME_PORT" "$CLI_PID"
}

# --- podmesh: TPROXY ingress (mTLS on 15006) in the server pod, egress listeners in the client pod
start_podmesh() {
    local egress="" resume="" a name port
    for a in "${APPS[@]}"; do
        name=${a%%:*} port=${a#*:}
        egress+="${egress:+##}$name#127.0.0.2:$port#$SRV_IP:$port"
    done
    # Same shape as the peers: the main client listener does a full handshake per connection,
    # a second client proxy on 127.0.0.3 resumes sessions.
    resume="web#127.0.0.3:8080#$SRV_IP:8080"
    start_bg podmesh-server "$NS_S" env CONTRAST_INGRESS_PROXY_CONFIG="" \
        "$PODMESH" proxy --tls-dir "$CERTS/server" --cmdline /dev/null ${PODMESH_EXTRA_ARGS:-}
    SRV_PID=$LAST_PID
    start_bg podmesh-client "$NS_C" env CONTRAST_INGRESS_PROXY_CONFIG=DISABLED CONTRAST_EGRESS_PROXY_CONFIG="$egress" \
        "$PODMESH" proxy --tls-dir "$CERTS/client" --cmdline /dev/null --tls-resumption off ${PODMESH_EXTRA_ARGS:-}
    CLI_PID=$LAST_PID
    start_bg podmesh-client-resume "$NS_C" env CONTRAST_INGRESS_PROXY_CONFIG=DISABLED CONTRAST_EGRESS_PROXY_CONFIG="$resume" \
        "$PODMESH" proxy --tls-dir "$CERTS/client" --cmdline /dev/null --tls-resumption on ${PODMESH_EXTRA_ARGS:-}
    local resume_pid=$LAST_PID
    EP_IPERF="127.0.0.2 5201" EP_HTTP="127.0.0.2 8080" EP_ECHO="127.0.0.2 7000"
    EP_HTTP_RESUME="127.0.0.3 8080"
    wait_log podmesh-server proxy_ready "$SRV_PID" || return 1
    wait_log podmesh-client proxy_ready "$CLI_PID" || return 1
    wait_log podmesh-client-resume proxy_ready "$resume_pid" || return 1
}

stop_podmesh_extra() {
    # The proxy keeps its TPROXY table after it exits (fail closed: the app ports stay
    # unreachable instead of open in plaintext). Remove it, so no later pair runs through it.
    if ip netns exec "$NS_S" nft list table inet podmesh_tproxy >/dev/null 2>&1; then
        ip netns exec "$NS_S" nft delete table inet podmesh_tproxy || true
    fi
}
