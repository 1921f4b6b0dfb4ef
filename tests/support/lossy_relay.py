"""A TCP relay between a live client and the server that can lose one update packet and cut
the connection right after (what a flaky mobile link does), to test resuming."""

from __future__ import annotations

import socket
import threading

from mobdistill.contract import protocol


class LossyRelay:
    def __init__(self, upstream_port: int, drop_update_sequence: int) -> None:
        self.upstream_port, self.drop = upstream_port, drop_update_sequence
        self.listener = socket.create_server(("127.0.0.1", 0))
        self.port = self.listener.getsockname()[1]
        self.dropped = threading.Event()
        self.connections = 0
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self) -> None:
        while True:
            try:
                device, _ = self.listener.accept()
            except OSError:
                return
            self.connections += 1
            server = socket.create_connection(("127.0.0.1", self.upstream_port))
            threading.Thread(target=self._pipe, args=(device, server), daemon=True).start()
            threading.Thread(target=self._downlink, args=(server, device), daemon=True).start()

    @staticmethod
    def _pipe(source: socket.socket, sink: socket.socket) -> None:
        try:
            while data := source.recv(65536):
                sink.sendall(data)
        except OSError:
            pass
        finally:
            for s in (source, sink):
                s.close()

    def _downlink(self, server: socket.socket, device: socket.socket) -> None:
        """Server to device frame by frame: the chosen UPDATE is swallowed once, then both
        sides of this connection are closed."""
        channel = protocol.BlockingChannel(server)
        try:
            device.sendall(channel.read_exactly(len(protocol.PREFACE)))
            while True:
                message = channel.receive()
                if (message.kind == protocol.MessageType.UPDATE and not self.dropped.is_set()
                        and message.header.get("sequence") == self.drop):
                    self.dropped.set()
                    break
                device.sendall(protocol.encode(message))
        except (OSError, protocol.ProtocolError):
            pass
        for s in (server, device):
            try:
                s.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass
            s.close()

    def close(self) -> None:
        self.listener.close()
