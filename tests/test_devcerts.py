"""Development certificates: what a TLS client verifies against them."""

import ipaddress
import stat
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives.asymmetric import ec
from twisted.trial import unittest

from nea.tls import devcerts
from nea.tls.server import TLSFiles, server_context


class DevCertsTests(unittest.TestCase):
    def setUp(self):
        self.dir = Path(self.mktemp())
        devcerts.generate(self.dir)

    def load(self, name):
        return x509.load_pem_x509_certificate((self.dir / name).read_bytes())

    def test_server_certificate_is_ecdsa_p256_for_localhost(self):
        server = self.load(devcerts.SERVER_CERT)
        key = server.public_key()
        self.assertIsInstance(key, ec.EllipticCurvePublicKey)
        self.assertEqual(key.curve.name, "secp256r1")
        names = server.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
        self.assertIn("localhost", names.get_values_for_type(x509.DNSName))
        self.assertIn(ipaddress.ip_address("127.0.0.1"), names.get_values_for_type(x509.IPAddress))

    def test_leaves_are_signed_by_the_ca(self):
        ca = self.load(devcerts.CA_CERT)
        for name in (devcerts.SERVER_CERT, devcerts.CLIENT_CERT):
            leaf = self.load(name)
            leaf.verify_directly_issued_by(ca)  # raises if not

    def test_keys_are_private_to_the_owner(self):
        for name in (devcerts.CA_KEY, devcerts.SERVER_KEY, devcerts.CLIENT_KEY):
            mode = stat.S_IMODE((self.dir / name).stat().st_mode)
            self.assertEqual(mode, 0o600, name)

    def test_ensure_keeps_existing_certificates(self):
        before = (self.dir / devcerts.SERVER_CERT).read_bytes()
        self.assertFalse(devcerts.ensure(self.dir))
        self.assertEqual((self.dir / devcerts.SERVER_CERT).read_bytes(), before)
        (self.dir / devcerts.CLIENT_KEY).unlink()
        self.assertTrue(devcerts.ensure(self.dir))
        self.assertNotEqual((self.dir / devcerts.SERVER_CERT).read_bytes(), before)


def _generate_missing(directory: str) -> bool:
    d = Path(directory)
    return devcerts.generate_missing(d, [d / devcerts.SERVER_KEY, d / devcerts.SERVER_CERT])


class ConcurrentStarts(unittest.TestCase):
    def test_daemons_starting_at_once_generate_one_matching_set(self):
        """Four processes at once in one directory: one set is written, its key fits its cert."""
        directory = self.mktemp()
        with ProcessPoolExecutor(4) as pool:
            generated = list(pool.map(_generate_missing, [directory] * 4))
        self.assertEqual(sorted(generated), [False, False, False, True])
        d = Path(directory)
        server_context(TLSFiles(d / devcerts.SERVER_KEY, d / devcerts.SERVER_CERT))
