using System.Buffers.Binary;
using System.Text;

namespace DifferenceEngine.Tests.Codecs;

/// <summary>Seeded page generators: the shapes real memory has, and the adversarial ones.</summary>
internal static class TestPages
{
    public const int PageSize = 4096;

    private static readonly string[] Words =
    [
        "the", "page", "memory", "engine", "difference", "def", "return", "self", "import", "class", "None",
        "int", "value", "0x7f3a", "error", "=", "(", ")", ":", "\"", "for", "in", "if", "else", "x", "i", "42",
    ];

    /// <summary>Named kinds of single pages, each made fresh from the given generator.</summary>
    public static IEnumerable<(string Name, Func<Random, byte[]> Make)> Kinds()
    {
        yield return ("random", Random);
        yield return ("zero", _ => new byte[PageSize]);
        yield return ("one repeated byte", r => Filled((byte)r.Next(256)));
        yield return ("repeated 32-bit word", r => RepeatedWord((uint)r.Next()));
        yield return ("text-like", TextLike);
        yield return ("all different bytes", _ => AllDifferentBytes());
        yield return ("pointers and small integers", PointerLike);
        yield return ("sparse", Sparse);
        yield return ("nearby 32-bit values", NearbyWords);
        yield return ("random half", r => { byte[] p = new byte[PageSize]; r.NextBytes(p.AsSpan(0, PageSize / 2)); return p; });
    }

    /// <summary>Named kinds of (reference, page) pairs for the delta codec.</summary>
    public static IEnumerable<(string Name, Func<Random, (byte[] Reference, byte[] Page)> Make)> PairKinds()
    {
        yield return ("identical", r => { byte[] a = AnyPage(r); return (a, (byte[])a.Clone()); });
        yield return ("one byte changed", r =>
        {
            byte[] a = AnyPage(r);
            byte[] b = (byte[])a.Clone();
            int at = r.Next(3) switch { 0 => 0, 1 => PageSize - 1, _ => r.Next(PageSize) };
            b[at] ^= (byte)(1 + r.Next(255));
            return (a, b);
        });
        yield return ("a few scattered changes", r =>
        {
            byte[] a = AnyPage(r);
            byte[] b = (byte[])a.Clone();
            for (int i = r.Next(2, 20); i > 0; i--)
            {
                b[r.Next(PageSize)] = (byte)r.Next(256);
            }

            return (a, b);
        });
        yield return ("inserted block shifts the rest", r =>
        {
            byte[] a = AnyPage(r);
            byte[] b = new byte[PageSize];
            int at = r.Next(PageSize);
            int n = r.Next(1, 300);
            a.AsSpan(0, at).CopyTo(b);
            int inserted = Math.Min(n, PageSize - at);
            r.NextBytes(b.AsSpan(at, inserted));
            a.AsSpan(at, PageSize - at - inserted).CopyTo(b.AsSpan(at + inserted));
            return (a, b);
        });
        yield return ("deleted block shifts the rest", r =>
        {
            byte[] a = AnyPage(r);
            byte[] b = new byte[PageSize];
            int at = r.Next(PageSize);
            int n = r.Next(1, Math.Min(300, PageSize - at) + 1);
            a.AsSpan(0, at).CopyTo(b);
            a.AsSpan(at + n).CopyTo(b.AsSpan(at));
            r.NextBytes(b.AsSpan(PageSize - n));
            return (a, b);
        });
        yield return ("blocks moved around", r =>
        {
            byte[] a = Random(r);
            byte[] b = (byte[])a.Clone();
            for (int i = r.Next(1, 5); i > 0; i--)
            {
                int n = r.Next(8, 512);
                a.AsSpan(r.Next(PageSize - n), n).CopyTo(b.AsSpan(r.Next(PageSize - n)));
            }

            return (a, b);
        });
        yield return ("pointers rebased (ASLR)", r =>
        {
            byte[] a = PointerLike(r);
            byte[] b = (byte[])a.Clone();
            ulong shift = (ulong)r.Next(1, 1 << 20) << 12;
            for (int i = 0; i < PageSize; i += 8)
            {
                ulong v = BinaryPrimitives.ReadUInt64LittleEndian(a.AsSpan(i));
                if (v >> 40 == 0x7F)
                {
                    BinaryPrimitives.WriteUInt64LittleEndian(b.AsSpan(i), v + shift);
                }
            }

            return (a, b);
        });
        yield return ("completely different", r => (AnyPage(r), AnyPage(r)));
        yield return ("random vs random", r => (Random(r), Random(r)));
        yield return ("zero reference", r => (new byte[PageSize], AnyPage(r)));
        yield return ("zero page", r => (AnyPage(r), new byte[PageSize]));
        yield return ("all different bytes vs rotated", r =>
        {
            byte[] a = AllDifferentBytes();
            byte[] b = new byte[PageSize];
            int k = r.Next(1, 256);
            for (int i = 0; i < PageSize; i++)
            {
                b[i] = (byte)(i + k);
            }

            return (a, b);
        });
    }

    public static byte[] AnyPage(Random r)
    {
        var kinds = Kinds().ToArray();
        return kinds[r.Next(kinds.Length)].Make(r);
    }

    public static byte[] Random(Random r)
    {
        byte[] p = new byte[PageSize];
        r.NextBytes(p);
        return p;
    }

    public static byte[] Filled(byte value)
    {
        byte[] p = new byte[PageSize];
        p.AsSpan().Fill(value);
        return p;
    }

    public static byte[] RepeatedWord(uint word)
    {
        byte[] p = new byte[PageSize];
        for (int i = 0; i < PageSize; i += 4)
        {
            BinaryPrimitives.WriteUInt32LittleEndian(p.AsSpan(i), word);
        }

        return p;
    }

    public static byte[] AllDifferentBytes()
    {
        byte[] p = new byte[PageSize];
        for (int i = 0; i < PageSize; i++)
        {
            p[i] = (byte)i;
        }

        return p;
    }

    public static byte[] TextLike(Random r)
    {
        var text = new StringBuilder(PageSize + 16);
        while (text.Length < PageSize)
        {
            text.Append(Words[r.Next(Words.Length)]).Append(r.Next(12) == 0 ? '\n' : ' ');
        }

        return Encoding.ASCII.GetBytes(text.ToString(0, PageSize));
    }

    /// <summary>A heap-like page: 8-byte slots of zeros, small integers and user-space pointers.</summary>
    public static byte[] PointerLike(Random r)
    {
        byte[] p = new byte[PageSize];
        ulong heap = 0x00007F0000000000UL | ((ulong)r.Next(1 << 24) << 12);
        for (int i = 0; i < PageSize; i += 8)
        {
            ulong v = r.Next(4) switch
            {
                0 => 0,
                1 => (ulong)r.Next(1000),
                _ => heap + ((ulong)r.Next(1 << 16) << 3),
            };
            BinaryPrimitives.WriteUInt64LittleEndian(p.AsSpan(i), v);
        }

        return p;
    }

    public static byte[] Sparse(Random r)
    {
        byte[] p = new byte[PageSize];
        for (int i = r.Next(1, 40); i > 0; i--)
        {
            p[r.Next(PageSize)] = (byte)r.Next(1, 256);
        }

        return p;
    }

    /// <summary>32-bit values close to each other: WKdm's partial matches.</summary>
    public static byte[] NearbyWords(Random r)
    {
        byte[] p = new byte[PageSize];
        uint[] bases = [(uint)r.Next(), (uint)r.Next(), (uint)r.Next()];
        for (int i = 0; i < PageSize; i += 4)
        {
            BinaryPrimitives.WriteUInt32LittleEndian(p.AsSpan(i), bases[r.Next(bases.Length)] + (uint)r.Next(600));
        }

        return p;
    }
}
